"""The ``train_reranker`` stage: Ray Train (TorchTrainer, DDP) on ``augment/reranker.parquet``.

Writes ``models/reranker/`` (a plain HF folder + tokenizer, loadable with no project code), and the
knowledge-gap evaluation (``report.json`` / ``report.md`` in the same folder, also in the manifest).
Checkpoints live in ``train/reranker-<key>/`` outside the stage folder, so a killed run resumes from
its last checkpoint when rerun with the same settings.
"""

from __future__ import annotations

from typing import Any

from kard_ray import training
from kard_ray.artifacts import RunDir, StageResult, config_hash, local_copy, run_stage
from kard_ray.config import KardConfig
from kard_ray.stages import augment as augment_stage
from kard_ray.stages import data as data_stage
from kard_ray.stages import index as index_stage
from kard_ray.stages import rationales as rationales_stage
from kard_ray.training import TRAIN_DIR

STAGE = "models/reranker"


def fit(cfg: KardConfig, run: RunDir, name: str, fresh: bool) -> tuple[Any, dict]:
    import ray

    from kard_ray.reranker.train import train_loop

    r = cfg.reranker
    if fresh:
        run.delete(TRAIN_DIR, name)
    ds = ray.data.read_parquet(run.uri_of(augment_stage.STAGE, "reranker.parquet"))
    if r.samples_per_question:
        ds = ds.filter(expr=f"sample < {r.samples_per_question}")
    ds = ds.materialize()
    workers = max(1, r.workers.num_workers)
    steps_per_epoch = max(1, ds.count() // (r.batch_size * workers))
    loop_config = {"reranker": r.model_dump(), "steps_per_epoch": steps_per_epoch,
                   "passages_path": local_copy(run.uri_of("kb", "passages.arrow"))}
    result = training.fit(train_loop, loop_config, r.workers, run.uri_of(TRAIN_DIR), name, {"train": ds},
                          r.max_failures)
    return result, {"steps_per_epoch": steps_per_epoch, "workers": workers}


def evaluate(cfg: KardConfig, run: RunDir, model_dir: str) -> dict:
    from kard_ray.answers import rationale_query
    from kard_ray.reranker.evaluate import knowledge_gap
    from kard_ray.reranker.model import Reranker
    from kard_ray.retrieval.bm25 import BM25Index
    from kard_ray.retrieval.open import open_passages, open_retriever

    r = cfg.reranker
    questions = data_stage.read_split(run, cfg.eval.split)[: r.eval_questions]
    table = run.read_table(f"{rationales_stage.STAGE}/rationales.parquet", columns=["qid", "sample", "rationale"])
    rationales = {}
    for row in table.to_pylist():
        if row["sample"] == 0:
            rationales[row["qid"]] = rationale_query(row["rationale"], cfg.augment.rationale_query)
    bm25 = BM25Index(local_copy(run.uri_of(index_stage.STAGE, "bm25")))
    first = bm25 if r.first_stage == "bm25" else open_retriever(run.uri, cfg.retrieval, r.first_stage)
    return knowledge_gap(questions, rationales, bm25=bm25, first_stage=first,
                         reranker=Reranker(model_dir, r.max_length), store=open_passages(run.uri),
                         first_stage_name=r.first_stage, kappa_star=r.first_stage_k, ks=cfg.eval.recall_at,
                         with_options=cfg.augment.query_with_options)


def storage_name(cfg: KardConfig, run: RunDir) -> str:
    """Checkpoint folder under ``train/``: the same training settings on the same data resume there."""
    aug = run.manifest(augment_stage.STAGE)
    if aug is None:
        raise RuntimeError("train_reranker needs the augment stage; run it first")
    settings = cfg.reranker.model_dump(exclude={"workers", "eval_questions", "first_stage", "first_stage_k"})
    return f"reranker-{config_hash(settings, aug['key'])[:10]}"


def run(cfg: KardConfig, run_dir: RunDir, force: bool = False, log=print) -> dict[str, Any]:
    r = cfg.reranker
    name = storage_name(cfg, run_dir)

    def body(run: RunDir) -> StageResult:
        import json

        from kard_ray.reranker.evaluate import report_markdown

        result, info = fit(cfg, run, name, fresh=force)
        metrics = result.metrics or {}
        target = training.export_checkpoint(run, result.checkpoint, STAGE)
        gap = evaluate(cfg, run, target)
        run.write_text(f"{STAGE}/report.json", json.dumps(gap, indent=2))
        run.write_text(f"{STAGE}/report.md", report_markdown(gap))
        log(report_markdown(gap))
        return StageResult(
            counts={"steps": int(metrics.get("step", 0)), "epochs": r.epochs, "workers": info["workers"]},
            extra={"final_loss": metrics.get("loss"), "pairs_per_s": metrics.get("pairs_per_s"),
                   "resumed_from_step": metrics.get("resumed_from_step"), "train_storage": name,
                   "knowledge_gap": gap})

    return run_stage(run_dir, STAGE, body, config=[r.model_dump(exclude={"eval_questions"}), cfg.eval.recall_at],
                     upstream=[augment_stage.STAGE], force=force, log=log)
