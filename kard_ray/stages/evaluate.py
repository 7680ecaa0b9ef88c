"""The ``evaluate`` stage: every method on the same test questions, as Ray Data batch jobs.

1. Retrieval (Ray Data actor): per test question, BM25 with the question, the reranker over the
   first stage's kappa* candidates, and the oracle (BM25 with the teacher's rationale for the
   test question, when one exists).
2. Generation (Ray Data actor pool per student): ft and rd without passages; the KARD student
   with BM25, reranked and oracle passages.
3. Accuracy with a 95% bootstrap interval, recall@k of the needed facts, an error class per
   question (retrieval miss / rerank miss / reasoning error), charts and ``predictions.parquet``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from kard_ray.answers import rationale_query
from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import InferenceSettings, KardConfig
from kard_ray.data.schema import Question
from kard_ray.efficiency import PhaseClock, efficiency, inference_flops
from kard_ray.evaluation import metrics as M
from kard_ray.evaluation.charts import write_charts
from kard_ray.evaluation.report import report_markdown
from kard_ray.fs import local_copy
from kard_ray.inference import question_query
from kard_ray.registry import STUDENT_OF, output, stage, student_stage
from kard_ray.retrieval.bm25 import BM25Index
from kard_ray.run_readers import open_passages, open_reranker, open_retriever
from kard_ray.runtime import cores_per_worker, is_embedded, use_assigned_cores
from kard_ray.stages.data import read_split
from kard_ray.stages.rationales import teacher_rationales
from kard_ray.student.generate import predict_with_ray

PASSAGES_OF = {"kard_bm25": "bm25_rows", "kard_reranker": "reranked_rows", "oracle": "oracle_rows"}


class EvalRetrieve:
    """Ray Data actor: BM25, the first stage and the reranker opened once; three rankings per question."""

    def __init__(self, run_uri: str, cfg: dict[str, Any], with_reranker: bool):
        use_assigned_cores()
        self.cfg = KardConfig.model_validate(cfg)
        self.settings = s = InferenceSettings.of(self.cfg)
        self.bm25 = BM25Index(local_copy(f"{run_uri}/{output('index', 'bm25')}"))
        self.first = self.bm25 if s.first_stage == "bm25" else open_retriever(run_uri, self.cfg.retrieval,
                                                                               s.first_stage)
        self.reranker = open_reranker(run_uri, s) if with_reranker else None
        self.store = open_passages(run_uri)
        self.k = max([*self.cfg.eval.recall_at, s.passages])

    def __call__(self, batch: pa.Table) -> pa.Table:
        s = self.settings
        out: dict[str, list] = {"qid": [], "bm25_rows": [], "candidate_rows": [], "reranked_rows": [],
                                "oracle_rows": []}
        for r in batch.to_pylist():
            query = question_query(s, r["question"], r["options"])
            cands = self.first.search(query, s.first_stage_k)[0]
            reranked = cands[: self.k]
            if self.reranker is not None and len(cands):
                reranked = self.reranker.retrieve(query, self.first, self.store.texts, self.k, s.first_stage_k,
                                                  cands, hops=s.hops)[0]
            out["qid"].append(r["qid"])
            out["bm25_rows"].append(self.bm25.search(query, self.k)[0].tolist())
            out["candidate_rows"].append(cands.tolist())
            out["reranked_rows"].append(np.asarray(reranked).tolist())
            oracle = rationale_query(r["rationale"], self.cfg.augment.rationale_query) if r["rationale"] else None
            out["oracle_rows"].append(self.bm25.search(oracle, self.k)[0].tolist() if oracle else [])
        return pa.table(out)


def rerank_actor_options(cfg: KardConfig, with_reranker: bool) -> dict[str, float]:
    """Resources of the evaluation's retrieval actor: every core of the stage (query encodings), and
    ``reranker.num_gpus`` when it runs the reranker."""
    return {"num_cpus": cores_per_worker(None, 1, is_embedded()),
            "num_gpus": cfg.reranker.num_gpus if with_reranker else 0.0}


def retrieve(cfg: KardConfig, run: RunDir, questions: list[Question],
             rationales: dict[str, str]) -> tuple[dict[str, dict], bool]:
    import ray

    with_reranker = "kard_reranker" in cfg.eval.methods and run.is_done("reranker")
    rows = [{"qid": q.id, "question": q.question, "options": q.options, "rationale": rationales.get(q.id)}
            for q in questions]
    ds = ray.data.from_arrow(pa.Table.from_pylist(rows)).map_batches(
        EvalRetrieve,
        fn_constructor_kwargs={"run_uri": run.uri, "cfg": cfg.model_dump(), "with_reranker": with_reranker},
        compute=ray.data.ActorPoolStrategy(size=1), batch_size=64, batch_format="pyarrow",
        **rerank_actor_options(cfg, with_reranker))
    return {r["qid"]: r for r in ds.take_all()}, with_reranker


def available_methods(cfg: KardConfig, run: RunDir, has_reranker: bool, rationales: dict) -> tuple[list[str], dict]:
    """The configured methods whose models exist; the others with the reason they were skipped."""
    chosen, skipped = [], {}
    for m in cfg.eval.methods:
        if not run.is_done(student_stage(STUDENT_OF[m])):
            skipped[m] = f"no trained student ({student_stage(STUDENT_OF[m])})"
        elif m == "kard_reranker" and not has_reranker:
            skipped[m] = "no trained reranker"
        elif m == "oracle" and not rationales:
            skipped[m] = "no teacher rationales for the test questions (add the split to teacher.splits)"
        else:
            chosen.append(m)
    return chosen, skipped


def generation_efficiency(preds: list[dict[str, Any]]) -> dict[str, Any]:
    """Tokens/s and achieved FLOP/s of one student's generation job against its actors' matmul probe."""
    seconds = sum(p["seconds"] for p in preds)
    tokens = sum(p["prompt_tokens"] + p["completion_tokens"] for p in preds)
    generated = sum(p["completion_tokens"] for p in preds)
    return efficiency(inference_flops(tokens, preds[0]["params"]), seconds, preds[0]["probe_flops_per_s"],
                      generated_tokens_per_s=round(generated / seconds, 1) if seconds else 0.0,
                      mean_completion_tokens=round(generated / len(preds), 1))


def same_input(row: dict[str, Any]) -> tuple:
    """What a student's prompt is made of: rows equal here get the same prompt."""
    return row["question"], tuple(row["options"]), tuple(row["passage_rows"])


def predict(cfg: KardConfig, run: RunDir, methods: list[str], questions: list[Question], ranked: dict,
            log, efficiency: dict[str, Any]) -> list[dict[str, Any]]:
    """Every student's answers in one Ray Data generation job, the students in turn on the same actors
    (``efficiency`` gets each student's figures). An input that two methods of a student share (BM25 and the
    reranker, or the oracle, picked the same passages in the same order) is generated once: prefill of the
    passages is most of the work."""
    e, s = cfg.eval, InferenceSettings.of(cfg)
    store = open_passages(run.uri)
    rows_of, unique = {}, []
    for model in dict.fromkeys(STUDENT_OF[m] for m in methods):
        rows = []
        for m in (m for m in methods if STUDENT_OF[m] == model):
            for q in questions:
                prows = ranked[q.id][PASSAGES_OF[m]][: s.passages] if m in PASSAGES_OF else []
                rows.append({"student": model, "qid": f"{m}|{q.id}", "question": q.question, "options": q.options,
                             "passages": store.texts(prows), "passage_rows": prows})
        first_of: dict[tuple, dict] = {}
        for r in rows:
            first_of.setdefault(same_input(r), r)
        rows_of[model] = (rows, first_of)
        unique += first_of.values()
        log(f"evaluate: generating {len(first_of)} answers with student_{model} "
            f"({len(rows) - len(first_of)} inputs repeat another method's)")
    students = {model: (run.uri_of(output(student_stage(model), "model")), model) for model in rows_of}
    preds = predict_with_ray(unique, students, s, actors=e.actors, batch_size=e.batch_size,
                             use_gpu=cfg.student.workers.use_gpu,
                             cpus_per_actor=cores_per_worker(e.cpus_per_actor, e.actors, is_embedded()))
    pred_of = {(r["student"], same_input(r)): p for r, p in zip(unique, preds)}
    out = []
    for model, (rows, first_of) in rows_of.items():
        efficiency[f"student_{model}"] = generation_efficiency([pred_of[(model, key)] for key in first_of])
        for row in rows:
            p = {k: v for k, v in pred_of[(model, same_input(row))].items() if k != "student"}
            method, qid = row["qid"].split("|", 1)
            out.append({**p, "method": method, "qid": qid, "passage_rows": row["passage_rows"],
                        "passages": row["passages"]})
    return out


def rationale_source(cfg: KardConfig) -> str:
    """What the students distilled from, named for what it is."""
    t = cfg.teacher
    if t.source == "api" and t.reference:
        return "the reference teacher (synthetic world, rule-based)"
    return {"annotations": "dataset annotations (human rationales, no LLM)",
            "import": f"imported rationales ({t.import_path})"}.get(t.source, f"LLM teacher {t.model}")


def summarise(cfg: KardConfig, run: RunDir, questions: list[Question], methods: list[str], preds: list[dict],
              ranked: dict, has_reranker: bool) -> tuple[dict, list[dict]]:
    e = cfg.eval
    store = open_passages(run.uri)
    by_id = {q.id: q for q in questions}
    texts = {qid: {k: store.texts(v) for k, v in r.items() if k.endswith("_rows")} for qid, r in ranked.items()}
    rows, report_methods = [], {}
    for m in methods:
        mine = [p for p in preds if p["method"] == m]
        correct, classes, examples, given = [], Counter(), {}, []
        for p in mine:
            q = by_id[p["qid"]]
            ok = p["prediction"] == q.answer
            cls = None
            if m in PASSAGES_OF:
                cands = texts[q.id]["candidate_rows"] if m == "kard_reranker" else None
                cls = M.error_class(ok, q.facts, p["passages"], cands)
                classes[cls] += 1
                given.append(M.facts_given(q.facts, p["passages"]))
                if cls != M.CORRECT and len(examples.setdefault(cls, [])) < e.examples_per_class:
                    examples[cls].append({"qid": q.id, "question": q.question, "gold": q.answer_text,
                                          "predicted": q.options[p["prediction"]] if p["prediction"] >= 0 else None})
            correct.append(ok)
            rows.append({"method": m, "qid": q.id, "question": q.question, "gold": q.answer,
                         "prediction": p["prediction"], "correct": ok, "parsed_by": p["parsed_by"],
                         "votes": p["votes"], "generation": p["generation"], "passage_rows": p["passage_rows"],
                         "passage_pids": store.pids(p["passage_rows"]),
                         "error_class": cls})
        summary = M.accuracy_ci(correct, e.bootstrap, cfg.seed)
        summary["parsed_by"] = dict(Counter(p["parsed_by"] for p in mine))
        if classes:
            summary["error_classes"] = dict(classes)
            summary["examples"] = examples
        if any(given):
            summary["by_facts_given"] = M.accuracy_by(given, correct)
        report_methods[m] = summary
    facts = [by_id[qid].facts for qid in ranked]
    retrieval = {"bm25 (question)": M.recall_at(facts, [texts[q]["bm25_rows"] for q in ranked], e.recall_at)}
    if has_reranker:
        name = f"{cfg.reranker.first_stage} -> reranker"
        retrieval[name] = M.recall_at(facts, [texts[q]["reranked_rows"] for q in ranked], e.recall_at)
    if any(texts[q]["oracle_rows"] for q in ranked):
        retrieval["bm25 (teacher rationale)"] = M.recall_at(facts, [texts[q]["oracle_rows"] for q in ranked],
                                                            e.recall_at)
    retrieval = {k: v for k, v in retrieval.items() if any(x is not None for x in v.values())}
    n_options = {len(q.options) for q in questions}
    report = {"run_dir": run.uri, "split": e.split, "questions": len(questions), "decoding": e.decoding,
              "question_kind": "unseen-entity" if cfg.data.synth is not None else "held-out",
              "rationales_from": rationale_source(cfg),
              "passages": e.passages, "methods": report_methods, "retrieval": retrieval,
              "chance": 1 / n_options.pop() if len(n_options) == 1 else None,
              "majority": round(max(Counter(q.answer for q in questions).values()) / len(questions), 4)}
    return report, rows


def training_curves(run: RunDir, cfg: KardConfig) -> dict[str, str]:
    """Links, relative to ``evaluate/``, to the loss charts of the trainings this evaluation used."""
    trained = [n for n in stage("evaluate").needs(cfg) if "loss_png" in stage(n).outputs]
    return {n: f"../{output(n, 'loss_png')}" for n in trained if run.exists(output(n, "loss_png"))}


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    import yaml


    e = cfg.eval
    questions = read_split(run, e.split)[: e.questions]
    if not questions:
        raise ValueError(f"evaluate: the {e.split} split has no questions")
    teacher = teacher_rationales(run) if "oracle" in e.methods else {}
    rationales = {q.id: teacher[q.id] for q in questions if q.id in teacher}
    clock = PhaseClock()
    with clock("retrieval"):
        ranked, has_reranker = retrieve(cfg, run, questions, rationales)
    methods, skipped = available_methods(cfg, run, has_reranker, rationales)
    if not methods:
        raise RuntimeError("evaluate: nothing to evaluate: " + "; ".join(f"{m}: {r}" for m, r in skipped.items()))
    efficiency: dict[str, Any] = {}
    with clock("generation"):
        preds = predict(cfg, run, methods, questions, ranked, log, efficiency)
    clock.seconds["generation_loops"] = round(sum(b["compute_s"] for b in efficiency.values()), 2)
    report, rows = summarise(cfg, run, questions, methods, preds, ranked, has_reranker)
    report["skipped"] = skipped
    report["inference"] = InferenceSettings.of(cfg).model_dump()
    report["training_curves"] = training_curves(run, cfg)
    run.write_table(output("evaluate", "predictions"), pa.Table.from_pylist(rows))
    run.write_text(output("evaluate", "report_json"), json.dumps(report, indent=2))
    run.write_text(output("evaluate", "report_md"), report_markdown(report))
    # what Serve builds its answer settings from: the config this report was made with
    run.write_text(output("evaluate", "config"), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if run.is_local:
        write_charts(report, run.path("evaluate"))
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for path in write_charts(report, tmp):
                with open(path, "rb") as fh:
                    run.write_bytes(f"evaluate/{path.rsplit('/', 1)[1]}", fh.read())
    return StageResult(counts={"questions": len(questions), "methods": len(methods)},
                       extra={"accuracy": {m: r["accuracy"] for m, r in report["methods"].items()},
                              "skipped": skipped, "efficiency": efficiency, "phases_s": clock.seconds})
