"""The ``reranker`` stage: Ray Train (TorchTrainer, DDP) on ``augment/reranker.parquet``.

Writes ``reranker/`` (a plain HF folder + tokenizer, loadable with no project code), and the
knowledge-gap evaluation (``report.json`` / ``report.md`` in the same folder, also in the manifest).
Checkpoints live in ``train/reranker-<key>/`` outside the stage folder, so a killed run resumes from
its last checkpoint when rerun with the same settings.
"""

from __future__ import annotations

import json
from typing import Any

from kard_ray import training
from kard_ray.answers import rationale_query
from kard_ray.artifacts import RunDir, StageResult, config_hash
from kard_ray.config import InferenceSettings, KardConfig
from kard_ray.efficiency import PhaseClock
from kard_ray.fs import local_copy
from kard_ray.registry import TRAIN_DIR, checkpoints_to_discard, output
from kard_ray.reranker.evaluate import knowledge_gap, knowledge_gap_markdown
from kard_ray.reranker.train import train_loop
from kard_ray.retrieval.bm25 import BM25Index
from kard_ray.run_readers import open_passages, open_reranker, open_retriever
from kard_ray.runtime import cores_per_worker, is_embedded, use_assigned_cores
from kard_ray.stages.data import read_split
from kard_ray.stages.rationales import teacher_rationales


def train(cfg: KardConfig, run: RunDir, name: str, fresh: bool) -> tuple[Any, dict]:
    import ray


    r = cfg.reranker
    if fresh:
        run.delete(TRAIN_DIR, name)
    ds = ray.data.read_parquet(run.uri_of(output("augment", "reranker")))
    if r.samples_per_question:
        ds = ds.filter(expr=f"sample < {r.samples_per_question}")
    ds = ds.materialize()
    workers = max(1, r.workers.num_workers)
    steps_per_epoch = max(1, ds.count() // (r.batch_size * workers))
    loop_config = {"reranker": r.model_dump(), "steps_per_epoch": steps_per_epoch,
                   "passages_uri": run.uri_of(output("kb", "passages_arrow"))}  # each worker localises it
    result = training.fit(train_loop, loop_config, r.workers, run.uri_of(TRAIN_DIR), name, {"train": ds},
                          r.max_failures)
    return result, {"steps_per_epoch": steps_per_epoch, "workers": workers}


def knowledge_gap_report(cfg: KardConfig, run: RunDir) -> dict:
    """The knowledge gap on held-out questions, with the first stage the evaluation and Serve use."""
    r = cfg.reranker
    questions = read_split(run, cfg.eval.split)[: r.eval_questions]
    rationales = {qid: rationale_query(text, cfg.augment.rationale_query)
                  for qid, text in teacher_rationales(run).items()}
    bm25 = BM25Index(local_copy(run.uri_of(output("index", "bm25"))))
    first = bm25 if r.first_stage == "bm25" else open_retriever(run.uri, cfg.retrieval, r.first_stage)
    others = {"reranker": open_retriever(run.uri, cfg.retrieval, "reranker")} if r.architecture == "bi" else {}
    return knowledge_gap(questions, rationales, bm25=bm25, first_stage=first,
                         reranker=open_reranker(run.uri, InferenceSettings.of(cfg)), store=open_passages(run.uri),
                         first_stage_name=r.first_stage, kappa_star=r.first_stage_k, ks=cfg.eval.recall_at,
                         with_options=cfg.augment.query_with_options, other_first_stages=others)


def report_task_options(cfg: KardConfig) -> dict[str, float]:
    """Resources of the task that runs the reranker for its report: the stage's cores, ``reranker.num_gpus``."""
    return {"num_cpus": cores_per_worker(None, 1, is_embedded()), "num_gpus": cfg.reranker.num_gpus}


def _knowledge_gap_in_task(cfg: KardConfig, run: RunDir) -> dict:
    use_assigned_cores()
    return knowledge_gap_report(cfg, run)


def knowledge_gap_on_ray(cfg: KardConfig, run: RunDir) -> dict:
    """:func:`knowledge_gap_report` in a Ray task holding the reranker's resources (a GPU when configured), not
    in the driver."""
    import ray

    return ray.get(ray.remote(_knowledge_gap_in_task).options(**report_task_options(cfg)).remote(cfg, run))


def storage_name(cfg: KardConfig, run: RunDir) -> str:
    """Checkpoint folder under ``train/``: the same training settings on the same data resume there."""
    aug = run.manifest("augment")
    if aug is None:
        raise RuntimeError("the reranker stage needs the augment stage; run it first")
    settings = cfg.reranker.key_settings({"workers", "eval_questions", "first_stage", "first_stage_k", "num_gpus"})
    return f"reranker-{config_hash(settings, aug['key'])[:10]}"


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    r = cfg.reranker
    name = storage_name(cfg, run)
    clock = PhaseClock()
    with clock("train"):
        result, info = train(cfg, run, name, fresh=force)
    metrics = result.metrics or {}
    with clock("export"):
        training.export_checkpoint(run, result.checkpoint, output("reranker", "model"))
    with clock("history"):
        training.export_history(run, result.checkpoint, output("reranker", "history"), output("reranker", "loss_png"),
                                f"reranker ({r.model.rsplit('/', 1)[-1]})")
    vectors = None
    if r.architecture == "bi":  # passage vectors once per KB: reranking then encodes only queries
        from kard_ray.reranker.vectors import build_passage_vectors

        with clock("passage_vectors"):
            vectors = build_passage_vectors(run.uri_of(output("kb", "passages_arrow")),
                                            run.uri_of(output("reranker", "model")), r.max_length,
                                            run.uri_of(output("reranker", "vectors")), r.num_gpus)
    with clock("knowledge_gap_report"):
        gap = {**knowledge_gap_on_ray(cfg, run),
               "question_kind": "unseen-entity" if cfg.data.synth is not None else "held-out"}
    run.write_text(output("reranker", "report_json"), json.dumps(gap, indent=2))
    run.write_text(output("reranker", "report_md"), knowledge_gap_markdown(gap))
    log(knowledge_gap_markdown(gap))
    return StageResult(
        counts={"steps": int(metrics.get("step", 0)), "epochs": r.epochs, "workers": info["workers"]},
        extra={"final_loss": metrics.get("loss"), "pairs_per_s": metrics.get("pairs_per_s"),
               "resumed_from_step": metrics.get("resumed_from_step"), "train_storage": name,
               "passage_vectors": vectors, "efficiency": metrics.get("efficiency"), "knowledge_gap": gap,
               "phases_s": training.phases(clock, metrics)},
        scratch=checkpoints_to_discard(cfg.keep_train_checkpoints, name))
