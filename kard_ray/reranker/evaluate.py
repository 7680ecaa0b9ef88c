"""The knowledge gap, measured: how well the question alone finds what the rationale would find.

For held-out questions, recall@k of (a) the gold facts when the dataset has them (the synthetic
world's needed facts, OBQA's ``fact1``) and (b) the passages BM25 ranks top-3 for the teacher's
rationale, when retrieving with the question by BM25, by the configured first stage, and by the
first stage followed by the reranker; plus the first stage's candidate ceiling (recall@kappa*).
"""

from __future__ import annotations

from collections.abc import Sequence

from kard_ray.data.schema import Question
from kard_ray.evaluation.metrics import facts_found, hit_rate
from kard_ray.reranker.model import query_text


def recall(hit_lists: list[list[bool]]) -> float:
    """Over all (question, target) pairs; NaN when there are none (the report prints it as such)."""
    return hit_rate((h for hits in hit_lists for h in hits), empty=float("nan"))


def knowledge_gap(questions: Sequence[Question], rationales: dict[str, str], *, bm25, first_stage, reranker, store,
                  first_stage_name: str, kappa_star: int, ks: Sequence[int] = (1, 3, 10),
                  with_options: bool = True, other_first_stages: dict | None = None) -> dict:
    """``other_first_stages``: more retrievers (name -> retriever) whose question-only rankings are reported
    beside the configured first stage's (e.g. the trained bi-encoder searching its stored vectors)."""
    max_k = max(ks)
    others = {n: r for n, r in (other_first_stages or {}).items() if n not in ("bm25", first_stage_name)}
    methods = list(dict.fromkeys(["bm25", first_stage_name, *others, f"{first_stage_name}+reranker"]))
    ceiling_facts, ceiling_rat = [], []
    fact_hits = {m: {k: [] for k in ks} for m in methods}
    rat_hits = {m: {k: [] for k in ks} for m in methods}
    for q in questions:
        query = query_text(q.question, q.options, with_options)
        cands = first_stage.search(query, kappa_star)[0]
        cand_texts = store.texts(cands.tolist())
        ranked = {first_stage_name: cands[:max_k],
                  f"{first_stage_name}+reranker": reranker.retrieve(query, first_stage, store.texts, max_k,
                                                                     kappa_star, cands)[0]}
        if first_stage_name != "bm25":
            ranked["bm25"] = bm25.search(query, max_k)[0]
        for name, retriever in others.items():
            ranked[name] = retriever.search(query, max_k)[0]
        if q.facts:
            ceiling_facts.append(facts_found(q.facts, cand_texts))
            for m, rows in ranked.items():
                texts = store.texts(rows.tolist())
                for k in ks:
                    fact_hits[m][k].append(facts_found(q.facts, texts[:k]))
        if q.id in rationales:
            target = set(bm25.search(rationales[q.id], 3)[0].tolist())
            ceiling_rat.append([r in set(cands.tolist()) for r in target])
            for m, rows in ranked.items():
                for k in ks:
                    rat_hits[m][k].append([r in set(rows[:k].tolist()) for r in target])
    out: dict = {"questions": len(questions), "first_stage": first_stage_name, "kappa_star": kappa_star}
    if ceiling_facts:
        out["gold_facts"] = {m: {f"recall@{k}": recall(v[k]) for k in ks} for m, v in fact_hits.items()}
        out["gold_facts"]["candidate_ceiling"] = {f"recall@{kappa_star}": recall(ceiling_facts)}
    if ceiling_rat:
        out["rationale_top3"] = {m: {f"recall@{k}": recall(v[k]) for k in ks} for m, v in rat_hits.items()}
        out["rationale_top3"]["candidate_ceiling"] = {f"recall@{kappa_star}": recall(ceiling_rat)}
    return out


def knowledge_gap_markdown(metrics: dict) -> str:
    kind = metrics.get("question_kind", "held-out")
    lines = [f"# Reranker: the knowledge gap ({metrics['questions']} {kind} questions)", "",
             f"First stage: {metrics['first_stage']}, {metrics['kappa_star']} candidates reranked.", ""]
    for key, title in (("gold_facts", "Recall of the gold facts"),
                       ("rationale_top3", "Recall of the passages rationale-BM25 ranks top-3")):
        if key not in metrics:
            continue
        table = metrics[key]
        ks = list(next(iter(table.values())).keys())
        lines += [f"## {title}", "", "| retrieval with the question | " + " | ".join(ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for method, vals in table.items():
            if method != "candidate_ceiling":
                lines.append(f"| {method} | " + " | ".join(f"{vals[k]:.3f}" for k in ks) + " |")
        ceiling = table["candidate_ceiling"]
        lines += ["", f"Candidate ceiling: {next(iter(ceiling.items()))[0]} = {next(iter(ceiling.values())):.3f}", ""]
    return "\n".join(lines)
