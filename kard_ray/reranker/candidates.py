"""Candidate sets for reranker training and the per-step candidate sampling of the paper."""

from __future__ import annotations

import numpy as np

FROM_RATIONALE, FROM_QUESTION, FROM_BOTH = 1, 2, 3


def candidate_set(rationale_rows: np.ndarray, question_rows: np.ndarray, kappa: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-kappa by the rationale ∪ top-kappa by the question: (rows, source flags), rationale list first."""
    r, q = [int(x) for x in rationale_rows[:kappa]], [int(x) for x in question_rows[:kappa]]
    source: dict[int, int] = {}
    for row in r:
        source[row] = source.get(row, 0) | FROM_RATIONALE
    for row in q:
        source[row] = source.get(row, 0) | FROM_QUESTION
    rows = list(dict.fromkeys(r + q))
    return np.array(rows, np.int64), np.array([source[x] for x in rows], np.int8)


def sample_candidates(rng: np.random.Generator, sources: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """Indices of n candidates: the rationale's best, then half from each list (KARD's sampling)."""
    if len(sources) <= n:
        return np.arange(len(sources))
    best = int(np.argmax(targets))
    from_r = [i for i in np.flatnonzero(sources & FROM_RATIONALE) if i != best]
    from_q = [i for i in np.flatnonzero(sources & FROM_QUESTION) if i != best and i not in set(from_r)]
    half = (n - 1) // 2
    pick_r = list(rng.choice(from_r, size=min(half, len(from_r)), replace=False)) if from_r else []
    rest_q = n - 1 - len(pick_r)
    pick_q = list(rng.choice(from_q, size=min(rest_q, len(from_q)), replace=False)) if from_q else []
    chosen = [best, *pick_r, *pick_q]
    if len(chosen) < n:  # one list was short: fill from whatever is left
        left = [i for i in range(len(sources)) if i not in set(chosen)]
        chosen += list(rng.choice(left, size=n - len(chosen), replace=False))
    return np.array(chosen, np.int64)
