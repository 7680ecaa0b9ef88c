"""The ``student_<method>`` stages: one student per method (kard / rd / ft) on Ray Train.

Training rows come from ``augment/student.parquet`` (question, options, teacher rationale and the
passages BM25 finds with the rationale); ``ft`` trains on the answers alone. Prompts and targets
come from :mod:`kard_ray.student.formats`, the same code evaluation and serving use; each Ray Train
worker tokenises its own shard of the rows (no separate tokenising actors). Writes
``student_<method>/`` (a plain HF folder) and records throughput and padding share in the
manifest. Checkpoints live in ``train/student_<method>-<key>/`` so a killed run resumes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pyarrow as pa

from kard_ray import training
from kard_ray.artifacts import RunDir, StageResult, config_hash
from kard_ray.config import KardConfig, StudentConfig
from kard_ray.efficiency import PhaseClock
from kard_ray.registry import TRAIN_DIR, checkpoints_to_discard, output, student_stage
from kard_ray.student.formats import WITH_RATIONALE, format_fingerprint
from kard_ray.student.model import load_student
from kard_ray.student.train import schedule, train_loop
from kard_ray.training import ADAPTER_WEIGHTS, copy_model_files


def training_rows(run: RunDir, s: StudentConfig, method: str) -> list[dict[str, Any]]:
    """(qid, question, options, answer, rationale, passages) rows for ``method``."""
    table = run.read_table(output("augment", "student"))
    if s.samples_per_question:
        table = table.filter(pa.compute.less(table["sample"], s.samples_per_question))
    rows = table.to_pylist()
    if method == "ft":  # answers only: one row per question
        rows = list({r["qid"]: r for r in reversed(rows)}.values())[::-1]
    return [{"qid": r["qid"], "question": r["question"], "options": r["options"], "answer": r["answer"],
             "rationale": r["rationale"], "passages": r["passage_texts"][: s.passages] if method == "kard" else []}
            for r in rows]


def split_held_out(rows: list[dict[str, Any]], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train, eval) by question, so no question is in both."""
    qids = sorted({r["qid"] for r in rows})
    n_eval = int(len(qids) * fraction) if len(qids) > 1 else 0
    held = set(qids[len(qids) - n_eval:]) if n_eval else set()
    return [r for r in rows if r["qid"] not in held], [r for r in rows if r["qid"] in held]


def examples_dataset(rows: list[dict[str, Any]]):
    """Untokenized rows as a Ray Data dataset: Ray Train shards it, and each worker tokenizes its shard."""
    import ray

    return ray.data.from_arrow(pa.Table.from_pylist(rows)) if rows else None


def merge_lora(src: str, dst: str) -> None:
    """Export a LoRA checkpoint as a plain model: base weights + adapter, merged."""
    if not os.path.exists(os.path.join(src, ADAPTER_WEIGHTS)):
        copy_model_files(src, dst)
        return
    from peft import PeftModel


    with open(os.path.join(src, "adapter_config.json")) as fh:
        config = json.load(fh)
    family = "seq2seq" if config.get("task_type") == "SEQ_2_SEQ_LM" else "causal"
    tokenizer, base = load_student(config["base_model_name_or_path"], family)
    merged = PeftModel.from_pretrained(base, src).merge_and_unload()
    merged.save_pretrained(dst, safe_serialization=True)
    tokenizer.save_pretrained(dst)


def storage_name(cfg: KardConfig, run: RunDir, method: str) -> str:
    aug = run.manifest("augment")
    if aug is None:
        raise RuntimeError("the student stages need the augment stage; run it first")

    settings = cfg.student.key_settings({"workers", "method"})
    return f"student_{method}-{config_hash(settings, method, format_fingerprint(), aug['key'])[:10]}"


def build(cfg: KardConfig, run: RunDir, *, method: str, force: bool = False, log=print) -> StageResult:
    s = cfg.student
    name = storage_name(cfg, run, method)
    rows = training_rows(run, s, method)
    if not rows:
        raise ValueError("train_student: no training rows; check the rationales and augment stages")

    missing = [r["qid"] for r in rows if WITH_RATIONALE[method] and not r["rationale"]]
    if missing:  # here, not in a Train worker that Ray would restart max_failures times
        raise ValueError(f"train_student: method {method!r} trains on rationales, but {len(missing)} rows have none "
                         f"(first: {missing[0]}); check the rationales and augment stages")
    train_rows, eval_rows = split_held_out(rows, s.eval_fraction)
    train_ds, eval_ds = examples_dataset(train_rows), examples_dataset(eval_rows)
    workers = max(1, s.workers.num_workers)
    per_epoch, total = schedule(len(train_rows), s, workers)
    if force:
        run.delete(TRAIN_DIR, name)
    clock = PhaseClock()
    with clock("train"):
        result = training.fit(train_loop, {"student": s.model_dump(), "method": method,
                                           "steps_per_epoch": per_epoch, "total_steps": total},
                              s.workers, run.uri_of(TRAIN_DIR), name,
                              {"train": train_ds, **({"eval": eval_ds} if eval_ds is not None else {})},
                              s.max_failures)
    m = result.metrics or {}
    stage = student_stage(method)
    with clock("export"):
        training.export_checkpoint_on_ray(run, result.checkpoint, output(stage, "model"), merge_lora, s.workers)
    with clock("history"):
        training.export_history(run, result.checkpoint, output(stage, "history"), output(stage, "loss_png"),
                                f"{method} student ({s.model.rsplit('/', 1)[-1]})")
    log(f"student[{method}]: {m.get('step')} steps, loss {m.get('loss', float('nan')):.3f}, "
        f"eval loss {m.get('eval_loss', float('nan')):.3f}, {m.get('tokens_per_s', 0):.0f} tokens/s, "
        f"padding {m.get('padding_share', 0):.1%}")
    return StageResult(
        counts={"train_examples": len(train_rows), "eval_examples": len(eval_rows), "steps": int(m.get("step", 0)),
                "workers": workers},
        extra={"method": method, "model": s.model, "family": s.family, "final_loss": m.get("loss"),
               "eval_loss": m.get("eval_loss"), "tokens_per_s": m.get("tokens_per_s"),
               "padding_share": m.get("padding_share"), "resumed_from_step": m.get("resumed_from_step"),
               "passages_trimmed": m.get("passages_trimmed"), "train_storage": name, "efficiency": m.get("efficiency"),
               "phases_s": training.phases(clock, m)},
        scratch=checkpoints_to_discard(cfg.keep_train_checkpoints, name))
