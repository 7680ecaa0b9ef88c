"""The whole KARD pipeline as an ordered list of stages, run through one run directory.

data -> kb -> index -> rationales -> augment -> train_reranker -> train_student (one per method the
evaluation needs) -> evaluate. Finished stages (manifest present, same inputs and settings) are
skipped, so a killed run continues where it stopped; training stages also resume mid-way from
their checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from kard_ray.artifacts import RunDir
from kard_ray.config import KardConfig
from kard_ray.stages import augment, data, evaluate, index, kb, rationales, train_reranker, train_student


@dataclass(frozen=True)
class Step:
    name: str  # the stage folder in the run directory
    run: Callable[..., dict[str, Any]]  # (cfg, run, force=, log=) -> manifest


def steps(cfg: KardConfig) -> list[Step]:
    """The stages this config needs, in order."""
    out = [Step(m.STAGE, m.run) for m in (data, kb, index, rationales, augment)]
    if "kard_reranker" in cfg.eval.methods:
        out.append(Step(train_reranker.STAGE, train_reranker.run))
    for method in dict.fromkeys(evaluate.MODEL_OF[m] for m in cfg.eval.methods):
        out.append(Step(train_student.stage_name(method), partial(train_student.run, method=method)))
    out.append(Step(evaluate.STAGE, evaluate.run))
    return out


def run_pipeline(cfg: KardConfig, run: RunDir, force: bool = False, log=print,
                 on_stage: Callable[[str, str, dict | None, float], None] | None = None) -> dict[str, dict]:
    """Run every step; ``on_stage(name, status, manifest, seconds)`` sees 'start', 'skip' and 'done'."""
    manifests = {}
    for step in steps(cfg):
        t0 = time.perf_counter()
        if on_stage:
            on_stage(step.name, "start", None, 0.0)
        manifest = step.run(cfg, run, force=force, log=log)
        seconds = time.perf_counter() - t0
        manifests[step.name] = manifest
        if on_stage:
            on_stage(step.name, "skip" if manifest.get("up_to_date") else "done", manifest, seconds)
    return manifests
