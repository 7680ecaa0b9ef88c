"""Running stages from the registry through one run directory.

``run_stages(cfg, run, ["reranker"])`` runs the reranker and, first, whatever it needs; finished
stages (manifest present, same inputs and settings) are skipped, so a killed run continues where it
stopped, and training stages also resume mid-way from their checkpoints. ``--force`` reruns only the
stages asked for, never their upstream.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from kard_ray.artifacts import RunDir, run_stage, stage_fingerprints, stage_key
from kard_ray.config import KardConfig
from kard_ray.registry import plan, stage
from kard_ray.runtime import concurrent_stages, is_embedded, machine_cores, sharing_cores
from kard_ray.tracking import Tracker

OnStage = Callable[[str, str, "dict | None", float], None]


def run_one(name: str, cfg: KardConfig, run: RunDir, force: bool = False, log=print,
            body: Callable[..., Any] | None = None) -> dict[str, Any]:
    """One stage by name: key from its declaration, body (imported now unless given) run unless it is up to date."""
    s = stage(name)
    body = partial(body or s.load_body(), cfg, force=force, log=log, **s.params)
    return run_stage(run, s.name, body, config=s.key(cfg), inputs=s.inputs(cfg),
                     upstream=s.needs(cfg), force=force, clean=s.clean, log=log)


def current_key(cfg: KardConfig, run: RunDir, name: str) -> str | None:
    """The key stage ``name`` would run under now; None while a stage it needs has not finished."""
    s = stage(name)
    try:
        return stage_key(s.key(cfg), stage_fingerprints(run, s.name, s.inputs(cfg), s.needs(cfg)))
    except RuntimeError:
        return None


def run_stages(cfg: KardConfig, run: RunDir, targets: Sequence[str] = ("evaluate",), force: bool = False, log=print,
               on_stage: OnStage | None = None, concurrency: int | None = None) -> dict[str, dict]:
    """``targets`` and everything they need; ``on_stage(name, status, manifest, seconds)`` sees 'start', 'skip' and
    'done', always from the calling thread.

    Stages that do not need each other run at once (``ray.concurrent_stages``; the reranker and the three
    students after ``augment``), each on its share of the cores, so a machine with more cores than one small
    training uses well keeps them busy (on 2 cores two 1-thread trainings got no more done than two 2-thread
    ones in turn, hence one lane per two cores by default). Registry order breaks ties, so the longest trainings
    start first. After a failure nothing new starts; the stages already running finish, then the first error
    is raised. A share is fixed when its stage starts (a stage that turns out up to date still counted).
    """
    tracker = Tracker.open(cfg, run)
    if tracker is not None:
        on_stage = _tracked(tracker, on_stage)
    try:
        manifests = _run_planned(cfg, run, plan(cfg, targets), targets, force, log, on_stage, concurrency)
    except BaseException:
        if tracker is not None:
            tracker.finish(failed=True)
        raise
    if tracker is not None:
        tracker.finish()
    return manifests


def _tracked(tracker: Tracker, on_stage: OnStage | None) -> OnStage:
    """``on_stage`` that also logs each stage to experiment tracking once it has finished or been skipped."""
    def notify(name: str, status: str, manifest: dict | None, seconds: float) -> None:
        if manifest is not None:
            tracker.stage_done(name, manifest)
        if on_stage:
            on_stage(name, status, manifest, seconds)

    return notify


def _run_planned(cfg: KardConfig, run: RunDir, order: list[str], targets: Sequence[str], force: bool, log,
                 on_stage: OnStage | None, concurrency: int | None) -> dict[str, dict]:
    lanes = concurrency or concurrent_stages(cfg.ray.concurrent_stages, is_embedded())
    if lanes <= 1:  # one after another on this thread, with every core (Ctrl-C and Ray Train's abort as usual)
        return _run_in_turn(cfg, run, order, targets, force, log, on_stage)
    needs = {n: [d for d in stage(n).needs(cfg) if d in order] for n in order}
    finished: queue.Queue = queue.Queue()

    def work(name: str, body: Callable[..., Any], cores: int) -> None:
        t0 = time.perf_counter()
        try:
            with sharing_cores(cores):
                manifest = run_one(name, cfg, run, force=force and name in targets, log=log, body=body)
            finished.put((name, manifest, None, time.perf_counter() - t0))
        except BaseException as exc:  # handed to the calling thread, which raises it
            finished.put((name, None, exc, time.perf_counter() - t0))

    def notify(*args) -> None:  # a failing callback stops new launches like a failing stage
        try:
            if on_stage:
                on_stage(*args)
        except Exception as exc:
            errors.append(exc)

    manifests: dict[str, dict] = {}
    running: set[str] = set()
    errors: list[BaseException] = []
    while True:
        ready = [] if errors else [n for n in order if n not in manifests and n not in running
                                   and all(d in manifests for d in needs[n])]
        launch = ready[: max(0, lanes - len(running))]
        cores = max(1, machine_cores() // max(1, len(running) + len(launch)))
        for name in launch:
            notify(name, "start", None, 0.0)
            try:  # imported on this thread: a package imported in one stage thread while another imports its
                body = stage(name).load_body()  # submodule is a lock cycle Python breaks with _DeadlockError
            except Exception as exc:
                errors.append(exc)
                break
            threading.Thread(target=work, args=(name, body, cores), name=f"kard-stage-{name}", daemon=True).start()
            running.add(name)
        if not running:
            break
        name, manifest, error, seconds = finished.get()
        running.discard(name)
        if error is not None:
            errors.append(error)
            continue
        manifests[name] = manifest
        notify(name, "skip" if manifest.get("up_to_date") else "done", manifest, seconds)
    for later in errors[1:]:
        log(f"also failed: {type(later).__name__}: {later}")
    if errors:
        raise errors[0]
    return {n: manifests[n] for n in order}


def _run_in_turn(cfg: KardConfig, run: RunDir, order: list[str], targets: Sequence[str], force: bool, log,
                 on_stage: OnStage | None) -> dict[str, dict]:
    manifests = {}
    for name in order:
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
