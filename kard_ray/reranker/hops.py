"""Multi-hop reranking: close the part of the knowledge gap a single question-only ranking cannot.

A two-hop question ("what is the town where P was born known for?") needs a second fact that never
names the question's entity ("Famere is known for plum brandy"): nothing that sees only the question
can rank it. With ``hops = 2`` the reranker first picks its best passage for the question, then
retrieves and ranks again with the question *plus that passage* as the query, the way a rationale
names the bridge entity. Training matches inference: a share of the training queries are expanded
with the passages the rationale ranks best (``training_hop``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

Plan = Generator[tuple[str, str, Any], Any, list[tuple[Any, float]]]


def hop_query(query: str, chosen_texts: Sequence[str]) -> str:
    """The query of the next hop: the question followed by the passages chosen so far."""
    return " ".join([query, *(t.strip() for t in chosen_texts)])


def hop_plan(query: str, k: int, kappa: int, hops: int, key: Callable[[Any], Any] = lambda c: c[0],
             text: Callable[[Any], str] = lambda c: c[1]) -> Plan:
    """The multi-hop ranking as a plan that does no I/O itself, so that the same logic runs with
    in-process models (``multi_hop_rerank``) and with Serve deployment handles (``await``).

    Yields ``("search", query, n)`` (send back a list of candidate items) and ``("score", query,
    items)`` (send back one score per item); returns the chosen ``(item, score)`` pairs, best first.
    Every hop but the last adds its single best candidate; the last fills the remaining places.
    Candidates of a later hop: the first stage's for the expanded query, then the earlier hops'.
    """
    chosen: list[tuple[Any, float]] = []
    seen: list[Any] = []
    for hop in range(hops):
        q = hop_query(query, [text(c) for c, _ in chosen])
        found = yield ("search", q, kappa)
        taken = {key(c) for c, _ in chosen}
        seen = list({key(c): c for c in [*found, *seen] if key(c) not in taken}.values())
        if not seen:
            break
        scores = np.asarray((yield ("score", q, list(seen))), np.float64)
        order = np.argsort(-scores, kind="stable")[: 1 if hop < hops - 1 else k - len(chosen)]
        chosen += [(seen[i], float(scores[i])) for i in order]
        if len(chosen) >= k:
            break
    return chosen


def run_plan(plan: Plan, search: Callable[[str, int], list], score: Callable[[str, list], Any]):
    """Drive a ``hop_plan`` with synchronous search and score functions."""
    try:
        kind, q, arg = next(plan)
        while True:
            kind, q, arg = plan.send(search(q, arg) if kind == "search" else score(q, arg))
    except StopIteration as stop:
        return stop.value


def multi_hop_rerank(query: str, *, search: Callable[[str, int], Sequence[int]],
                     score: Callable[[str, list[int], list[str]], np.ndarray],
                     texts: Callable[[list[int]], list[str]],
                     k: int, kappa: int, hops: int = 1,
                     first_rows: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best passage rows for ``query``, best first, with their scores (each from its own hop).
    ``search`` is the first stage ((query, n) -> rows), ``score`` the reranker ((query, rows, texts) ->
    scores); ``first_rows``, when
    the caller already has them, are the first hop's candidates (no second search for them)."""
    pending = None if first_rows is None else [int(r) for r in first_rows]

    def items(q: str, n: int) -> list[tuple[int, str]]:
        nonlocal pending
        rows, pending = (pending, None) if pending is not None else ([int(r) for r in search(q, n)], None)
        return list(zip(rows, texts(rows)))

    chosen = run_plan(hop_plan(query, k, kappa, hops), items,
                      lambda q, cands: score(q, [r for r, _ in cands], [t for _, t in cands]))
    return np.array([c[0] for c, _ in chosen], np.int64), np.array([s for _, s in chosen], np.float32)


def training_hop(rng: np.random.Generator, hops: int, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For one training pair: the candidates that go into the query (the rationale's best h, with h
    uniform in 0..hops-1) and the candidates that stay to be ranked, in their order."""
    h = int(rng.integers(hops)) if hops > 1 else 0
    given = np.argsort(-np.asarray(targets), kind="stable")[:h].astype(np.int64)
    taken = set(given.tolist())
    keep = np.array([i for i in range(len(targets)) if i not in taken], np.int64)
    return given, keep
