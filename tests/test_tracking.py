"""Experiment tracking in MLflow: what a tracked run logs, read back with the MLflow client; a real tracking
server on 127.0.0.1; a rerun that logs nothing; tracking that changes no output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
import pytest
from conftest import TINY_RUN_SETS, free_port, quiet

from kard_ray.artifacts import MANIFEST, RunDir
from kard_ray.config import load_config
from kard_ray.pipeline import run_pipeline, run_stages
from kard_ray.preflight import refusals
from kard_ray.tracking import Tracker, default_uri, metric_name, numbers

METHODS = {"ft", "rd", "kard_bm25", "kard_reranker", "oracle"}


# --------------------------------------------------------------------------- no Ray, no MLflow needed


def test_numbers_keeps_finite_numeric_leaves_under_mlflow_names():
    got = numbers({"methods": {"kard": {"accuracy": 0.5, "n": 60, "label": "x"}},
                   "retrieval": {"bm25": {"recall@3": 0.7, "recall@10": None}}, "ok": True, "bad": float("nan")})
    assert got == {"methods.kard.accuracy": 0.5, "methods.kard.n": 60.0, "retrieval.bm25.recall_at_3": 0.7}
    assert metric_name("bm25 -> reranker (x)") == "bm25 -_ reranker _x_"


def test_tracking_off_opens_no_tracker(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path}/run", "tracking.backend=off"])  # YAML's bare off is false
    assert cfg.tracking.backend == "off" and Tracker.open(cfg, RunDir(cfg.run_dir)) is None


def test_a_remote_run_dir_needs_a_tracking_server_before_anything_runs():
    cfg = load_config(None, ["run_dir=s3://bucket/run", "tracking.backend=mlflow"])
    assert [r.key for r in refusals(cfg, ["data"])] == ["tracking.uri"]
    cfg = load_config(None, ["run_dir=s3://bucket/run", "tracking.backend=mlflow", "tracking.uri=http://mlflow:5000"])
    assert refusals(cfg, ["data"]) == []


# --------------------------------------------------------------------------- a tracked pipeline


def _client(uri: str):
    mlflow = pytest.importorskip("mlflow")
    return mlflow.tracking.MlflowClient(uri)


def _runs(client, experiment: str = "kard") -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


@pytest.mark.model
def test_a_tracked_pipeline_logs_accuracies_curves_and_models(tiny_pipeline):
    cfg, run, manifests = tiny_pipeline
    assert cfg.tracking.backend == "mlflow"
    client = _client(default_uri(run))
    runs = _runs(client)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert {"kard.commit", "kard.config_hash", "kard.machine"} <= set(parent.data.tags)
    stages = {r.data.tags["kard.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(stages) == set(manifests)

    evaluate = stages["evaluate"].data.metrics
    for m in METHODS:
        acc = evaluate[f"methods.{m}.accuracy"]
        assert evaluate[f"methods.{m}.ci_low"] <= acc <= evaluate[f"methods.{m}.ci_high"]
    assert any(k.startswith("retrieval.") and "recall_at_3" in k for k in evaluate)

    student = stages["student_kard"]
    losses = client.get_metric_history(student.info.run_id, "train/loss")
    assert [m.step for m in losses] == list(range(1, cfg.student.max_steps + 1))  # each step once, from rank 0
    assert client.get_metric_history(student.info.run_id, "train/lr")
    assert student.data.params["model"] == cfg.student.model  # the stage's config section as params
    for name in ("student_kard", "reranker"):
        model = {a.path for a in client.list_artifacts(stages[name].info.run_id, "model")}
        assert "model/config.json" in model and "model/model.safetensors" in model, model
        small = {a.path for a in client.list_artifacts(stages[name].info.run_id)}
        assert {"loss.png", "history.json", MANIFEST} <= small, small
    assert "report.md" in {a.path for a in client.list_artifacts(stages["evaluate"].info.run_id)}
    assert "recall_at_3" in " ".join(stages["reranker"].data.metrics)

    report = run.read_bytes("evaluate/report.md").decode()
    assert "../student_kard/loss.png" in report and "../reranker/loss.png" in report
    spent = sum(run.manifest(name)["tracking"]["seconds"] for name in manifests)
    assert spent < sum(m["duration_s"] for m in manifests.values())

    run_pipeline(cfg, run, log=quiet)  # everything up to date: a rerun logs nothing new
    assert len(_runs(client)) == len(runs)


@pytest.mark.model
def test_a_tracking_server_on_loopback_receives_a_stage_with_its_model(tiny_pipeline, tmp_path):
    _client("sqlite://")  # skips without mlflow
    cfg, run, _ = tiny_pipeline
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"),
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("mlflow server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(1)
        remote = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(
            update={"uri": uri, "experiment": "kard-server-test"})})
        tracker = Tracker.open(remote, run)
        manifest = {k: v for k, v in run.manifest("student_rd").items() if k != "tracking"}
        tracker.stage_done("student_rd", manifest)
        tracker.finish()
        client = _client(uri)
        runs = _runs(client, "kard-server-test")
        assert len(runs) == 2  # the invocation and its one stage
        stage = next(r for r in runs if r.data.tags.get("kard.stage") == "student_rd")
        assert run.manifest("student_rd")["tracking"]["run_id"] == stage.info.run_id
        assert len(client.get_metric_history(stage.info.run_id, "train/loss")) == cfg.student.max_steps
        assert "model/model.safetensors" in {a.path for a in client.list_artifacts(stage.info.run_id, "model")}
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.ray
def test_tracking_changes_nothing_in_the_outputs(augmented_run, tmp_path):
    pytest.importorskip("mlflow")
    untracked_cfg, untracked = augmented_run
    cfg = load_config(None, [f"run_dir={tmp_path}/run", *TINY_RUN_SETS, "tracking.backend=mlflow"])
    tracked = RunDir(cfg.run_dir)
    run_stages(cfg, tracked, ["augment"], log=quiet)
    for name in ("data", "kb", "index", "rationales", "augment"):
        a, b = untracked.manifest(name), tracked.manifest(name)
        assert a["key"] == b["key"] and "tracking" not in a and "tracking" in b
        assert [o["path"] for o in untracked.list_outputs(name)] == [o["path"] for o in tracked.list_outputs(name)]
        for o in untracked.list_outputs(name):
            if o["path"].endswith(".parquet"):
                assert pq.read_table(untracked.path(name, o["path"])).equals(
                    pq.read_table(tracked.path(name, o["path"]))), (name, o["path"])
