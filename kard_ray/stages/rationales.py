"""The ``rationales`` stage: n chain-of-thought rationales per question from the teacher.

Online (``teacher.mode: online``), questions flow through a Ray Data actor pool (``RationaleWorker``);
each actor keeps many requests in flight; one ``RateBudget`` actor holds the cluster-wide rate limit
and failure budget. By batch (``teacher.mode: batch``), the uncached requests go to the provider's
Batch API from the driver (``kard_ray/teacher/batch.py``). Either way every response is cached in
``cache/teacher/`` before it is used, and the table is built from the same rows. Writes
``rationales/rationales.parquet`` (one row per sample) and ``rationales/failures.parquet``.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import KardConfig, TeacherConfig
from kard_ray.credentials import Secret
from kard_ray.data.schema import Question, questions_to_table
from kard_ray.fs import local_copy
from kard_ray.registry import TEACHER_CACHE, output
from kard_ray.runtime import cluster_nodes
from kard_ray.stages.data import read_split
from kard_ray.teacher.batch import in_recorded_batches, run_batches
from kard_ray.teacher.cache import TeacherCache
from kard_ray.teacher.client import estimate_tokens
from kard_ray.teacher.limits import RateBudget
from kard_ray.teacher.reference_server import ReferenceTeacherProcess
from kard_ray.teacher.worker import RESULT_SCHEMA, RationaleWorker, TeacherAborted, plan_requests

REFERENCE_IDENTITY = "kard-reference-teacher"


def _questions(cfg: KardConfig, run: RunDir) -> list[Question]:
    return [q for split in cfg.teacher.splits for q in read_split(run, split)]


def endpoint_identity(t: TeacherConfig) -> str:
    """What the cache keys on: the endpoint (the reference teacher's port changes every run, so it is named)."""
    return REFERENCE_IDENTITY if t.reference else (t.base_url or "https://api.openai.com/v1")


@contextlib.contextmanager
def teacher_endpoint(cfg: KardConfig, run: RunDir):
    """The base_url to call: the configured one, or a reference teacher started for this run."""
    if not cfg.teacher.reference:
        yield cfg.teacher.base_url
        return

    # loopback on one machine; the driver node's address when actors on other nodes must reach it
    host = "127.0.0.1" if cluster_nodes(cfg.ray) <= 1 else _node_ip()
    with ReferenceTeacherProcess(local_copy(run.uri_of(output("data", "world"))), host=host) as server:
        yield server.base_url


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def plan(cfg: KardConfig, run: RunDir) -> dict[str, Any]:
    """What a run would cost now, online and by batch (cached samples are free): for --dry-run."""
    t = cfg.teacher
    questions = _questions(cfg, run)
    if t.source != "api":
        return {"mode": t.source, "questions": len(questions), "samples": len(questions), "cached_samples": 0,
                "calls": 0, "in_recorded_batches": 0, "est_prompt_tokens": 0, "est_completion_tokens": 0,
                "est_cost_usd": 0.0, "est_cost_batch_usd": 0.0}
    _, requests = plan_requests(t, TeacherCache(run.uri_of(TEACHER_CACHE)), questions, endpoint_identity(t))
    recorded = in_recorded_batches(run.uri_of(TEACHER_CACHE), endpoint_identity(t), t.model) \
        if t.mode == "batch" else set()
    to_pay = [r for cid, r in requests.items() if cid not in recorded]
    missing_samples = sum(len(r.samples) for r in requests.values())
    prompt_tokens = sum(estimate_tokens(m["content"]) for r in to_pay for m in r.messages)
    completion_tokens = sum(len(r.samples) for r in to_pay) * t.expected_completion_tokens
    return {"mode": t.mode, "questions": len(questions), "samples": len(questions) * t.n,
            "cached_samples": len(questions) * t.n - missing_samples, "calls": len(to_pay),
            "in_recorded_batches": len(requests) - len(to_pay), "est_prompt_tokens": prompt_tokens,
            "est_completion_tokens": completion_tokens,
            "est_cost_usd": round(cost(t, prompt_tokens, completion_tokens), 4),
            "est_cost_batch_usd": round(cost(t, prompt_tokens, completion_tokens, batch=True), 4)}


def cost(t: TeacherConfig, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
    """USD at the configured prices; ``batch``: less ``teacher.batch_discount``."""
    online = prompt_tokens / 1000 * t.price_per_1k_prompt + completion_tokens / 1000 * t.price_per_1k_completion
    return online * (1 - t.batch_discount) if batch else online


def _generate(cfg: KardConfig, run: RunDir, questions: list[Question]) -> pa.Table:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    t = cfg.teacher
    # beside the driver, not on a worker node whose loss would take the run's rate budget (or, for the actors, the
    # answers paid for but not yet cached) with it. Hard affinity: that node lives as long as the driver does, and
    # Ray Data's actor pool put soft-affinity actors on a worker node (2 of 34 billed twice in the chaos test)
    beside_driver = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    coordinator = ray.remote(RateBudget).options(
        num_cpus=0, max_restarts=-1, max_task_retries=-1, scheduling_strategy=beside_driver).remote(
        rpm=t.requests_per_minute, tpm=t.tokens_per_minute, failure_budget=t.failure_budget)
    actors = max(1, min(t.actors, math.ceil(len(questions) / t.batch_size)))
    with teacher_endpoint(cfg, run) as base_url:
        table = questions_to_table(questions)
        blocks = [table.slice(i, t.batch_size) for i in range(0, table.num_rows, t.batch_size)]
        ds = ray.data.from_arrow(blocks).map_batches(
            RationaleWorker,
            fn_constructor_kwargs={"cache_uri": run.uri_of(TEACHER_CACHE), "teacher": t.model_dump(),
                                   "base_url": base_url,
                                   "identity": endpoint_identity(t), "limiter_actor": coordinator,
                                   "concurrency": math.ceil(t.concurrency / actors),
                                   "api_key": Secret.from_env(t.api_key_env)},
            compute=ray.data.ActorPoolStrategy(size=actors), batch_size=t.batch_size, batch_format="pyarrow",
            **({"num_cpus": 0, "scheduling_strategy": beside_driver} if t.actors_on_driver_node else {"num_cpus": 0.5}),
        )
        try:
            parts = ray.get(ds.to_arrow_refs())
        except Exception as exc:
            aborted = ray.get(coordinator.status.remote())["aborted"]
            if aborted:
                raise TeacherAborted(aborted) from None
            raise exc
    return pa.concat_tables([p.cast(RESULT_SCHEMA) for p in parts if p.num_rows] or
                            [RESULT_SCHEMA.empty_table()])


def _generate_batch(cfg: KardConfig, run: RunDir, questions: list[Question], log) -> tuple[pa.Table, dict]:
    """The Batch API path (``teacher.batch``), on the driver: no Ray needed."""
    t = cfg.teacher
    with teacher_endpoint(cfg, run) as base_url:
        rows, stats = run_batches(t, run.uri_of(TEACHER_CACHE), questions, base_url, endpoint_identity(t),
                                  Secret.from_env(t.api_key_env), resubmit_lost=t.reference, log=log)
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), stats.as_dict()


def summarize(table: pa.Table, questions: list[Question], t: TeacherConfig,
              batch_tokens: dict[str, int] | None = None) -> StageResult:
    """Counts and costs; ``batch_tokens``: the part of this run's tokens billed at the batch price."""
    ok = table.filter(pc.is_null(table["error"]))
    failed = table.filter(pc.is_valid(table["error"]))
    new = ok.filter(pc.invert(ok["cached"]))
    kept = ok.filter(ok["correct"]) if t.filter_correct else ok
    per_q = Counter(kept["qid"].to_pylist())
    tokens = {"prompt": int(pc.sum(ok["prompt_tokens"]).as_py() or 0),
              "completion": int(pc.sum(ok["completion_tokens"]).as_py() or 0)}
    billed = {"prompt": int(pc.sum(new["prompt_tokens"]).as_py() or 0),
              "completion": int(pc.sum(new["completion_tokens"]).as_py() or 0)}
    counts = {"questions": len(questions), "samples": ok.num_rows, "samples_new": new.num_rows,
              "samples_cached": ok.num_rows - new.num_rows, "kept": kept.num_rows,
              "questions_with_rationale": len(per_q),
              "questions_without_rationale": len(questions) - len(per_q), "failed_requests": failed.num_rows}
    correct = pc.sum(ok["correct"]).as_py() or 0
    extra = {
        "teacher": t.model,
        "teacher_accuracy": round(correct / ok.num_rows, 4) if ok.num_rows else None,
        "kept_per_question": {"min": min((per_q.get(q.id, 0) for q in questions), default=0),
                              "mean": round(kept.num_rows / max(len(questions), 1), 3),
                              "max": max(per_q.values(), default=0)},
        "tokens_total": tokens, "tokens_billed_this_run": billed,
        "cost_usd_total": round(cost(t, tokens["prompt"], tokens["completion"]), 4),
        "cost_usd_this_run": round(_cost_this_run(t, billed, batch_tokens), 4),
        "failure_reasons": dict(Counter(r.split(":", 1)[0] for r in failed["error"].to_pylist())),
        "parse_methods": dict(Counter(ok["parse_method"].to_pylist())),
    }
    return StageResult(counts=counts, extra=extra)


def _cost_this_run(t: TeacherConfig, billed: dict[str, int], batch: dict[str, int] | None) -> float:
    batch = batch or {"prompt": 0, "completion": 0}
    return (cost(t, billed["prompt"] - batch["prompt"], billed["completion"] - batch["completion"])
            + cost(t, batch["prompt"], batch["completion"], batch=True))


def per_question(table: pa.Table, questions: list[Question], filter_correct: bool) -> pa.Table:
    """qid, samples, correct, kept, failed requests: one row per question (kept = what augment uses)."""
    stats = {q.id: [0, 0, 0] for q in questions}
    for r in table.select(["qid", "correct", "error"]).to_pylist():
        s = stats[r["qid"]]
        if r["error"] is not None:
            s[2] += 1
        else:
            s[0] += 1
            s[1] += bool(r["correct"])
    qids = list(stats)
    return pa.table({"qid": qids, "samples": [stats[q][0] for q in qids], "correct": [stats[q][1] for q in qids],
                     "kept": [stats[q][1] if filter_correct else stats[q][0] for q in qids],
                     "failed_requests": [stats[q][2] for q in qids]})


def teacher_rationales(run: RunDir) -> dict[str, str]:
    """The one rationale per question that stands for "the teacher's" (the oracle row, the reranker's
    knowledge-gap report): its first correct sample, else its first sample."""
    if not run.exists(output("rationales", "rationales")):
        return {}
    table = run.read_table(output("rationales", "rationales"), columns=["qid", "sample", "rationale", "correct"])
    best: dict[str, tuple[bool, int, str]] = {}
    for r in table.to_pylist():
        key = (not r["correct"], r["sample"], r["rationale"])
        if r["qid"] not in best or key < best[r["qid"]]:
            best[r["qid"]] = key
    return {qid: v[2] for qid, v in best.items()}


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    t = cfg.teacher
    questions = _questions(cfg, run)
    if t.source == "import":
        from kard_ray.teacher.importer import import_rationales

        rows, info = import_rationales(t.import_path, {q.id: q for q in questions})
        table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    elif t.source == "annotations":
        from kard_ray.teacher.annotations import annotation_rationales

        rows, info = annotation_rationales(questions)
        table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    elif t.mode == "batch":
        table, batch = _generate_batch(cfg, run, questions, log)
        info = {"batch": batch}
    else:
        table, info = _generate(cfg, run, questions), {}
    table = table.sort_by([("qid", "ascending"), ("sample", "ascending")])
    failed = pc.is_valid(table["error"])
    run.write_table(output("rationales", "rationales"), table.filter(pc.invert(failed)))
    run.write_table(output("rationales", "failures"), table.filter(failed))
    result = summarize(table, questions, t, info.get("batch", {}).get("tokens_billed_batch"))
    result.extra["teacher_mode"] = t.mode if t.source == "api" else t.source
    if t.source == "annotations":  # name it for what it is: human rationales, no LLM
        result.extra["teacher"] = "dataset annotations (human rationales)"
    run.write_table(output("rationales", "per_question"), per_question(table, questions, t.filter_correct))
    result.extra.update(info)
    log(f"[rationales] {result.counts['samples_new']} new samples, {result.counts['samples_cached']} from cache, "
        f"{result.counts['failed_requests']} failed requests; teacher accuracy "
        f"{result.extra['teacher_accuracy']}; tokens billed this run {result.extra['tokens_billed_this_run']} "
        f"(≈ ${result.extra['cost_usd_this_run']}, {result.extra['teacher_mode']})")
    return result
