"""The offline real-data configs end to end on slices of OBQA and StrategyQA (annotation rationales).

Small models and a handful of questions: what is checked is the wiring (holdout, fact pool, five
methods, the report's recall and facts-given split), not accuracy. Skipped without ../shared/data.
"""

from __future__ import annotations

import pytest
from conftest import REPO, quiet, shared

pytestmark = pytest.mark.ray

SMALL = [
    "data.holdout=8", "data.limit=24", "reranker.architecture=cross", "reranker.first_stage=bm25",
    "reranker.first_stage_k=10", "reranker.eval_questions=8", "reranker.max_length=48", "reranker.batch_size=4",
    "reranker.candidates_per_step=4", "reranker.epochs=1", "reranker.workers.cpus_per_worker=1",
    "augment.candidates_per_list=8", "student.model=tiny-t5", "student.family=seq2seq", "student.max_steps=2",
    "student.batch_size=4", "student.max_input_length=96", "student.max_target_length=48", "student.lr=1e-3",
    "student.train_layers=null", "student.workers.cpus_per_worker=1", "eval.max_new_tokens=16",
    "eval.bootstrap=50", "eval.cpus_per_actor=1",
    "ray.concurrent_stages=4",  # the four tiny trainings are mostly Ray Train start-up: overlap them
]


def _run(tmp_path, config: str, sets: list[str]):
    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.pipeline import run_pipeline

    cfg = load_config(str(REPO / "configs" / config), [f"run_dir={tmp_path}/run", *SMALL, *sets])
    run = RunDir(cfg.run_dir)
    manifests = run_pipeline(cfg, run, log=quiet)
    return cfg, run, manifests, run.read_json("evaluate/report.json")


def _check_report(report: dict, methods: set[str]) -> None:
    assert report["rationales_from"].startswith("dataset annotations")
    assert set(report["methods"]) == methods
    assert all(r["n"] == 8 for r in report["methods"].values())
    for m in ("kard_bm25", "kard_reranker", "oracle"):  # every question has facts: each lands in one group
        assert sum(g["n"] for g in report["methods"][m]["by_facts_given"].values()) == 8
    oracle, question = report["retrieval"]["bm25 (teacher rationale)"], report["retrieval"]["bm25 (question)"]
    assert oracle["recall@3"] > question["recall@3"]  # the annotations point at their own facts


def test_obqa_offline_slice(ray_session, tmp_path):
    dev, book = shared("obqa/obqa_dev.jsonl"), shared("obqa/openbook.txt")
    methods = ["ft", "kard_bm25", "kard_reranker", "oracle"]  # two students; RD's wiring is the tiny pipeline's
    _, run, manifests, report = _run(tmp_path, "obqa-offline.yaml", [f"data.train={dev}", f"kb.paths=[{book}]",
                                                                     f"eval.methods=[{', '.join(methods)}]"])
    assert manifests["data"]["counts"]["train"] == 24 and manifests["data"]["counts"]["test"] == 8
    assert manifests["rationales"]["extra"]["teacher"] == "dataset annotations (human rationales)"
    assert manifests["rationales"]["counts"]["kept"] == 32  # train + test, one rationale each
    _check_report(report, set(methods))
    assert report["retrieval"]["bm25 (teacher rationale)"]["recall@1"] >= 0.9  # fact1 is a line of the book


def test_strategyqa_offline_slice(ray_session, tmp_path):
    train = shared("strategyqa/strategyqa_train_split_2061.json")
    # the KARD methods only (one student)
    _, run, manifests, report = _run(tmp_path, "strategyqa-offline.yaml",
                                     [f"data.train={train}", "eval.methods=[kard_bm25, kard_reranker, oracle]"])
    facts = manifests["data"]["counts"]["annotated_facts"]
    assert facts > 5000  # the pool of the whole file, not of the 24 + 8 questions kept
    assert manifests["kb"]["counts"]["passages"] == facts
    _check_report(report, {"kard_bm25", "kard_reranker", "oracle"})
    assert report["chance"] == 0.5
