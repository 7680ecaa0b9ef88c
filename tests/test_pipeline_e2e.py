"""The whole pipeline end to end on a tiny world (tiny models): every stage's artifacts and the report."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import quiet

from kard_ray.pipeline import run_pipeline
from kard_ray.registry import plan

pytestmark = pytest.mark.ray

METHODS = ["ft", "rd", "kard_bm25", "kard_reranker", "oracle"]


def test_every_stage_leaves_its_artifacts(tiny_pipeline):
    cfg, run, manifests = tiny_pipeline
    assert plan(cfg) == list(manifests)
    root = Path(run.path())
    for rel in ["data/test.parquet", "kb/passages.arrow", "index/bm25", "rationales/rationales.parquet",
                "augment/student.parquet", "augment/reranker.parquet", "reranker/config.json",
                "student_kard/config.json", "student_rd/config.json", "student_ft/config.json",
                "evaluate/report.json", "evaluate/report.md", "evaluate/predictions.parquet", "evaluate/accuracy.png",
                "evaluate/recall.png", "evaluate/config.resolved.yaml"]:
        assert (root / rel).exists(), rel
    for name in manifests:
        assert run.is_done(name), name


def test_report_has_every_method_with_interval_and_recalls(tiny_pipeline):
    cfg, run, _ = tiny_pipeline
    report = json.loads(Path(run.path("evaluate/report.json")).read_text())
    assert list(report["methods"]) == METHODS
    for r in report["methods"].values():
        assert {"accuracy", "ci_low", "ci_high", "n"} <= set(r)
        assert 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1 and r["n"] == report["questions"]
    assert set(report["retrieval"]) == {"bm25 (question)", "bm25 -> reranker", "bm25 (teacher rationale)"}
    for vals in report["retrieval"].values():
        assert list(vals) == ["recall@1", "recall@3", "recall@10"]
    preds = pq.read_table(run.path("evaluate/predictions.parquet")).to_pylist()
    assert len(preds) == len(METHODS) * report["questions"]
    kard = [p for p in preds if p["method"] == "kard_reranker"]
    assert all(p["error_class"] in {"correct", "retrieval_miss", "rerank_miss", "reasoning_error"} for p in kard)
    assert all(p["correct"] == (p["prediction"] == p["gold"]) for p in preds)


def test_a_second_run_skips_every_finished_stage(tiny_pipeline):
    cfg, run, _ = tiny_pipeline
    again = run_pipeline(cfg, run, log=quiet)
    assert all(m.get("up_to_date") for m in again.values())


def test_kard_report_prints_the_table(tiny_pipeline):
    from typer.testing import CliRunner

    from kard_ray.cli import app

    _, run, _ = tiny_pipeline
    result = CliRunner().invoke(app, ["report", run.path()])
    assert result.exit_code == 0, result.output
    assert "KARD, reranked passages" in result.output and "report.md" in result.output
