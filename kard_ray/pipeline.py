"""Running stages from the registry through one run directory.

``run_stages(cfg, run, ["reranker"])`` runs the reranker and, first, whatever it needs; finished
stages (manifest present, same inputs and settings) are skipped, so a killed run continues where it
stopped, and training stages also resume mid-way from their checkpoints. ``--force`` reruns only the
stages asked for, never their upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from kard_ray.artifacts import RunDir, run_stage
from kard_ray.config import KardConfig
from kard_ray.registry import plan, stage

OnStage = Callable[[str, str, "dict | None", float], None]


def run_one(name: str, cfg: KardConfig, run: RunDir, force: bool = False, log=print) -> dict[str, Any]:
    """One stage by name: key from its declaration, body imported and run unless it is up to date."""
    s = stage(name)
    body = partial(s.run_body(), cfg, force=force, log=log, **s.params)
    return run_stage(run, s.name, body, config=s.key(cfg), inputs=s.inputs(cfg),
                     upstream=s.needs(cfg), force=force, clean=s.clean, log=log)


def run_stages(cfg: KardConfig, run: RunDir, targets: Sequence[str] = ("evaluate",), force: bool = False, log=print,
               on_stage: OnStage | None = None) -> dict[str, dict]:
    """``targets`` and everything they need, in order; ``on_stage(name, status, manifest, seconds)`` sees
    'start', 'skip' and 'done'."""
    manifests = {}
    for name in plan(cfg, targets):
        t0 = time.perf_counter()
        if on_stage:
            on_stage(name, "start", None, 0.0)
        manifest = run_one(name, cfg, run, force=force and name in targets, log=log)
        manifests[name] = manifest
        if on_stage:
            on_stage(name, "skip" if manifest.get("up_to_date") else "done", manifest, time.perf_counter() - t0)
    return manifests


def run_pipeline(cfg: KardConfig, run: RunDir, force: bool = False, log=print,
                 on_stage: OnStage | None = None) -> dict[str, dict]:
    """The whole pipeline (everything the evaluation needs); ``force`` reruns every stage."""
    return run_stages(cfg, run, plan(cfg), force=force, log=log, on_stage=on_stage)
