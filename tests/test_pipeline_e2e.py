"""The whole pipeline end to end on a tiny world (tiny models): every stage's artifacts and the report."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import quiet

from kard_ray.pipeline import run_pipeline
from kard_ray.registry import STUDENT_OF, plan

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


def test_training_and_generation_record_their_flops_for_the_compute_floor(tiny_pipeline):
    from kard_ray.efficiency import compute_floor

    _, _, manifests = tiny_pipeline
    blocks = [manifests[s]["extra"]["efficiency"] for s in ("reranker", "student_kard", "student_rd", "student_ft")]
    blocks += list(manifests["evaluate"]["extra"]["efficiency"].values())
    for block in blocks:
        assert block["tflops"] > 0 and block["compute_s"] > 0 and compute_floor(block) > 0, block


def test_training_and_evaluation_stages_say_where_their_time_outside_the_loops_went(tiny_pipeline):
    _, _, manifests = tiny_pipeline
    for name in ("reranker", "student_kard", "student_rd", "student_ft"):
        m = manifests[name]
        phases = m["extra"]["phases_s"]
        assert phases["train_loop"] == m["extra"]["efficiency"]["compute_s"], phases
        assert phases["train"] > phases["train_worker_setup"] + phases["train_loop"] > 0, phases
        outside = [v for k, v in phases.items() if not k.startswith("train_")]
        assert sum(outside) <= m["duration_s"] + 0.005 * len(outside), (name, phases)  # each phase rounded to 0.01
    phases = manifests["evaluate"]["extra"]["phases_s"]
    assert phases["generation"] > phases["generation_loops"] > 0 and phases["retrieval"] > 0, phases


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
    # a student's methods that retrieved the same passages for a question share one generation
    generations: dict[tuple, set] = {}
    for p in preds:
        generations.setdefault((STUDENT_OF[p["method"]], p["qid"], tuple(p["passage_rows"])), set()).add(
            p["generation"])
    assert all(len(g) == 1 for g in generations.values())


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


def test_stored_passage_vectors_equal_fresh_encodings(tiny_pipeline):
    """The bi-encoder's KB vectors (Ray Data, at training's end) are what the model computes now, and
    reranking with them scores like reranking the texts."""
    import numpy as np

    from kard_ray.config import InferenceSettings
    from kard_ray.run_readers import open_passages, open_reranker

    cfg, run, manifests = tiny_pipeline
    reranker = open_reranker(run.uri, InferenceSettings.of(cfg))
    store = open_passages(run.uri)
    assert reranker.vectors is not None and reranker.vectors.shape[0] == len(store)
    assert manifests["reranker"]["extra"]["passage_vectors"]["n_docs"] == len(store)
    rows = list(range(0, len(store), max(1, len(store) // 40)))
    fresh = reranker.embed_queries(store.texts(rows))
    assert np.abs(np.asarray(reranker.vectors[rows]) - fresh).max() < 1e-5
    query = "Where was the person born?"
    by_vectors = reranker.score_candidates(query, rows, store.texts(rows))
    by_texts = reranker.score_many([(query, store.texts(rows))])[0]
    assert np.allclose(by_vectors, by_texts, atol=1e-4 * reranker.scale)


def test_the_trained_encoder_is_a_first_stage_over_the_whole_kb(tiny_pipeline):
    import numpy as np

    from kard_ray.run_readers import open_retriever

    cfg, run, manifests = tiny_pipeline
    retriever = open_retriever(run.uri, cfg.retrieval, "reranker")
    rows, scores = retriever.search("Where was the person born?", 5)
    assert len(rows) == 5 and np.all(np.diff(scores) <= 1e-6)
    gap = manifests["reranker"]["extra"]["knowledge_gap"]["gold_facts"]
    assert {"bm25", "reranker", "bm25+reranker"} <= set(gap)  # its recall beside the other first stages
