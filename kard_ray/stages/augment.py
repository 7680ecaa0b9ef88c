"""The ``augment`` stage: knowledge for every kept (question, rationale) pair, as a Ray Data stage.

- ``augment/student.parquet``: the student's training rows: question, options, answer, rationale and
  the top-k passages BM25 retrieves with the *rationale* as the query;
- ``augment/reranker.parquet``: per pair, the candidate set (top-kappa by the rationale ∪ top-kappa
  by the question) with every candidate's target score BM25(rationale, passage), including the
  candidates only the question found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kard_ray.answers import rationale_query
from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import KardConfig, RetrievalConfig
from kard_ray.fs import local_copy
from kard_ray.registry import output
from kard_ray.reranker.candidates import FROM_QUESTION, FROM_RATIONALE, candidate_set
from kard_ray.reranker.model import query_text
from kard_ray.retrieval.bm25 import BM25Index
from kard_ray.run_readers import open_passages, open_retriever
from kard_ray.stages.data import read_split

STUDENT_COLUMNS = ["qid", "sample", "question", "options", "answer", "rationale", "passage_rows", "passage_pids",
                   "passage_texts"]
RERANKER_COLUMNS = ["qid", "sample", "query", "rationale", "rationale_query", "cand_rows", "cand_sources",
                    "cand_targets"]


def kept_pairs(run: RunDir, filter_correct: bool, split: str = "train") -> list[dict[str, Any]]:
    """(question, rationale) pairs of a split: every sample, or only those whose answer was right."""
    questions = {q.id: q for q in read_split(run, split)}
    table = run.read_table(output("rationales", "rationales"),
                           columns=["qid", "sample", "rationale", "correct"])
    if filter_correct:
        table = table.filter(table["correct"])
    pairs = []
    for r in table.to_pylist():
        q = questions.get(r["qid"])
        if q is not None:
            pairs.append({"qid": q.id, "sample": r["sample"], "question": q.question, "options": q.options,
                          "answer": q.answer, "rationale": r["rationale"]})
    return pairs


class AugmentBatch:
    """Ray Data actor: BM25 index and passage store opened once (memory-mapped)."""

    def __init__(self, run_uri: str, k: int, kappa: int, with_options: bool, rationale_mode: str,
                 question_retriever: str = "bm25", retrieval: dict | None = None):
        self.bm25 = BM25Index(local_copy(f"{run_uri}/{output('index', 'bm25')}"))
        self.question_side = self.bm25 if question_retriever == "bm25" else open_retriever(
            run_uri, RetrievalConfig.model_validate(retrieval or {}), question_retriever)
        self.passages = open_passages(run_uri)
        self.k, self.kappa, self.with_options, self.rationale_mode = k, kappa, with_options, rationale_mode

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out: dict[str, list] = {c: [] for c in dict.fromkeys(STUDENT_COLUMNS + RERANKER_COLUMNS)}
        queries = {r["qid"]: query_text(r["question"], r["options"], self.with_options) for r in rows}
        found = self.question_side.search_many(list(queries.values()), self.kappa)  # one batch: dense encodes once
        by_question = {qid: hits[0] for qid, hits in zip(queries, found)}
        for r in rows:
            query = queries[r["qid"]]
            r_query = rationale_query(r["rationale"], self.rationale_mode)
            r_rows = self.bm25.search(r_query, max(self.k, self.kappa))[0]
            cands, sources = candidate_set(r_rows, by_question[r["qid"]], self.kappa)
            top = r_rows[: self.k].tolist()
            values = {**r, "query": query, "rationale_query": r_query, "passage_rows": top,
                      "passage_pids": self.passages.pids(top), "passage_texts": self.passages.texts(top),
                      "cand_rows": cands.tolist(),
                      "cand_sources": sources.tolist(),
                      "cand_targets": self.bm25.score_rows(r_query, cands).tolist()}
            for c in out:
                out[c].append(values[c])
        return pa.table(out)


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    import ray

    a = cfg.augment
    pairs = kept_pairs(run, cfg.teacher.filter_correct)
    if not pairs:
        raise ValueError("augment: no kept rationales for the training questions; check the rationales stage")
    table = pa.Table.from_pylist(pairs)
    blocks = [table.slice(i, a.batch_size) for i in range(0, table.num_rows, a.batch_size)]
    ds = ray.data.from_arrow(blocks).map_batches(
        AugmentBatch, fn_constructor_kwargs={"run_uri": run.uri, "k": a.passages_per_rationale,
                                             "kappa": a.candidates_per_list, "with_options": a.query_with_options,
                                             "rationale_mode": a.rationale_query,
                                             "question_retriever": cfg.question_retriever(),
                                             "retrieval": cfg.retrieval.model_dump()},
        compute=ray.data.ActorPoolStrategy(size=a.actors), batch_size=a.batch_size, batch_format="pyarrow")
    out = pa.concat_tables(ray.get(ds.to_arrow_refs())).sort_by([("qid", "ascending"), ("sample", "ascending")])
    run.write_table(output("augment", "student"), out.select(STUDENT_COLUMNS))
    run.write_table(output("augment", "reranker"), out.select(RERANKER_COLUMNS))
    sizes = pc.list_value_length(out["cand_rows"]).to_numpy()
    src = np.concatenate([np.asarray(s) for s in out["cand_sources"].to_pylist()])
    return StageResult(
        counts={"pairs": out.num_rows, "questions": len(set(out["qid"].to_pylist()))},
        extra={"candidates_per_pair": {"mean": round(float(sizes.mean()), 2), "min": int(sizes.min()),
                                       "max": int(sizes.max())},
               "candidate_sources": {"rationale_only": int((src == FROM_RATIONALE).sum()),
                                     "question_only": int((src == FROM_QUESTION).sum()),
                                     "both": int((src == FROM_RATIONALE | FROM_QUESTION).sum())}})
