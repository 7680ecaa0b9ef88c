"""The pipeline's stage scheduler: independent stages at once, each on its share of the cores, never before what it
needs. Fast: the stage bodies are replaced by a recorder, no Ray."""

import threading
import time
from pathlib import Path

import pytest

import kard_ray.pipeline as pipeline
from kard_ray.config import load_config
from kard_ray.registry import plan, stage
from kard_ray.runtime import stage_cores

TRAINING = {"reranker", "student_kard", "student_rd", "student_ft"}
DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


@pytest.fixture
def recorder(monkeypatch):
    """run_one replaced: records (name, start, end, cores) and the most stages seen running at once."""
    lock, records, live, peak, fail = threading.Lock(), [], set(), [0], set()

    def fake_run_one(name, cfg, run, force=False, log=None, body=None):
        with lock:
            live.add(name)
            peak[0] = max(peak[0], len(live))
        start = time.perf_counter()
        time.sleep(0.2 if name in TRAINING else 0.02)
        with lock:
            live.discard(name)
            records.append((name, start, time.perf_counter(), stage_cores()))
        if name in fail:
            raise RuntimeError(f"{name} failed")
        return {"stage": name}

    monkeypatch.setattr(pipeline, "run_one", fake_run_one)
    monkeypatch.setattr("kard_ray.runtime.machine_cores", lambda: 2)  # a two-core machine
    return {"log": records, "peak": peak, "fail": fail, "run": object()}


def test_independent_stages_run_at_once_on_shared_cores_after_what_they_need(recorder):
    cfg = load_config(DEMO, ["tracking.backend=off"])
    order = plan(cfg)
    seen = []
    manifests = pipeline.run_stages(cfg, recorder["run"], order, concurrency=2,
                                    on_stage=lambda name, state, m, s: seen.append((name, state)))
    assert list(manifests) == order and recorder["peak"][0] == 2
    ends = {name: end for name, _, end, _ in recorder["log"]}
    for name, start, _, cores in recorder["log"]:
        assert all(ends[d] <= start for d in stage(name).needs(cfg))  # never before what it needs
        if name in TRAINING:
            assert cores == 1  # two at once on two cores: one each
    assert {n for n, s in seen if s == "start"} == set(order) and {n for n, s in seen if s == "done"} == set(order)
    trainings = sorted((s, e) for n, s, e, _ in recorder["log"] if n in TRAINING)
    assert any(a[1] > b[0] for a, b in zip(trainings, trainings[1:]))  # some overlap in time


def test_stage_bodies_are_imported_on_the_calling_thread_never_in_two_stage_threads_at_once(recorder, monkeypatch):
    """Two stage threads importing kard_ray.data and kard_ray.data.kb_sources at once hit Python's import-lock
    cycle (_DeadlockError in a cluster job); the scheduler imports every body before its thread starts."""
    importers = []
    monkeypatch.setattr(type(stage("kb")), "load_body", lambda self: importers.append(threading.current_thread()))
    cfg = load_config(DEMO, ["tracking.backend=off"])
    pipeline.run_stages(cfg, recorder["run"], plan(cfg), concurrency=2)
    assert len(importers) == len(plan(cfg)) and set(importers) == {threading.current_thread()}


def test_one_lane_runs_one_stage_at_a_time_with_every_core(recorder):
    cfg = load_config(DEMO, ["tracking.backend=off"])
    pipeline.run_stages(cfg, recorder["run"], plan(cfg), concurrency=1)
    assert recorder["peak"][0] == 1 and {c for *_, c in recorder["log"]} == {2}


def test_a_failing_progress_callback_stops_new_stages_like_a_failing_stage(recorder):
    cfg = load_config(DEMO, ["tracking.backend=off"])

    def on_stage(name, state, manifest, seconds):
        if name == "augment" and state == "done":
            raise ValueError("display broke")

    with pytest.raises(ValueError, match="display broke"):
        pipeline.run_stages(cfg, recorder["run"], plan(cfg), concurrency=2, on_stage=on_stage)
    assert not {name for name, *_ in recorder["log"]} & TRAINING


def test_a_failed_stage_stops_new_ones_and_its_error_is_raised(recorder):
    cfg = load_config(DEMO, ["tracking.backend=off"])
    recorder["fail"].add("reranker")
    with pytest.raises(RuntimeError, match="reranker failed"):
        pipeline.run_stages(cfg, recorder["run"], plan(cfg), concurrency=2)
    ran = {name for name, *_ in recorder["log"]}
    assert "evaluate" not in ran and "student_kard" in ran  # started beside the reranker, allowed to finish
