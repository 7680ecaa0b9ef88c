"""Accuracy with a bootstrap interval, recall of needed facts, and per-question error classes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from kard_ray.data.text import contains_fact

# error classes of a KARD prediction, in the order a question can fail
CORRECT, RETRIEVAL_MISS, RERANK_MISS, REASONING = "correct", "retrieval_miss", "rerank_miss", "reasoning_error"
WRONG = "wrong"  # no gold facts to tell why (real datasets without annotations)


def accuracy_ci(correct: Sequence[bool], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy and its percentile bootstrap interval over questions."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return {"accuracy": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"accuracy": round(float(x.mean()), 4), "ci_low": round(float(lo), 4), "ci_high": round(float(hi), 4),
            "n": int(x.size)}


def facts_found(facts: Sequence[str], texts: Sequence[str]) -> list[bool]:
    return [any(contains_fact(t, f) for t in texts) for f in facts]


def hit_rate(hits: Iterable[bool], empty: float | None = None) -> float | None:
    """The share of hits, rounded for reports; ``empty`` when there is nothing to count."""
    hits = list(hits)
    return round(float(np.mean(hits)), 4) if hits else empty


def recall_at(facts_per_q: Sequence[Sequence[str]], texts_per_q: Sequence[Sequence[str]], ks: Sequence[int]) -> dict:
    """recall@k of the needed facts over all (question, fact) pairs; questions without facts are skipped."""
    return {f"recall@{k}": hit_rate(h for facts, texts in zip(facts_per_q, texts_per_q) if facts
                                    for h in facts_found(facts, texts[:k]))
            for k in ks}


def error_class(correct: bool, facts: Sequence[str], given: Sequence[str], candidates: Sequence[str] | None) -> str:
    """Why a KARD prediction failed: the needed facts never retrieved (retrieval miss), retrieved as
    candidates but ranked out (rerank miss), or all given and still answered wrong (reasoning)."""
    if correct:
        return CORRECT
    if not facts:
        return WRONG
    if all(facts_found(facts, given)):
        return REASONING
    if candidates is not None and all(facts_found(facts, candidates)):
        return RERANK_MISS
    return RETRIEVAL_MISS


def facts_given(facts: Sequence[str], given: Sequence[str]) -> str | None:
    """How many of a question's needed facts its passages state: all, some or none (None: no facts)."""
    if not facts:
        return None
    found = sum(facts_found(facts, given))
    return "all" if found == len(facts) else "some" if found else "none"


def accuracy_by(groups: Sequence[str | None], correct: Sequence[bool]) -> dict:
    """Accuracy and n per group (questions without a group left out): does the student use what it gets?"""
    out: dict[str, dict] = {}
    for g in ("all", "some", "none"):
        hits = [c for gg, c in zip(groups, correct) if gg == g]
        if hits:
            out[g] = {"accuracy": hit_rate(hits), "n": len(hits)}
    return out
