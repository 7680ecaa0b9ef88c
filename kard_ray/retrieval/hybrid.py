"""Hybrid retrieval: fuse BM25 and dense result lists by reciprocal rank or by normalised score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kard_ray.config import HybridConfig

Hits = tuple[np.ndarray, np.ndarray]


def rrf(lists: Sequence[Hits], k: int, rrf_k: int = 60) -> Hits:
    """Reciprocal-rank fusion: score(d) = sum over lists of 1 / (rrf_k + rank_d)."""
    fused: dict[int, float] = {}
    for rows, _ in lists:
        for rank, r in enumerate(rows.tolist(), start=1):
            fused[r] = fused.get(r, 0.0) + 1.0 / (rrf_k + rank)
    return _top(fused, k)


def weighted(lists: Sequence[Hits], weights: Sequence[float], k: int) -> Hits:
    """Min-max normalise each list's scores to [0, 1], then a weighted sum (absent = 0)."""
    fused: dict[int, float] = {}
    for (rows, scores), w in zip(lists, weights):
        if len(scores) == 0:
            continue
        lo, hi = float(scores.min()), float(scores.max())
        norm = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        for r, s in zip(rows.tolist(), norm.tolist()):
            fused[r] = fused.get(r, 0.0) + w * s
    return _top(fused, k)


def _top(fused: dict[int, float], k: int) -> Hits:
    items = sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:k]
    return np.array([i[0] for i in items], np.int64), np.array([i[1] for i in items], np.float64)


class HybridRetriever:
    def __init__(self, bm25, dense, cfg: HybridConfig, depth: int = 100):
        self.bm25, self.dense, self.cfg, self.depth = bm25, dense, cfg, depth

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        depth = max(k, self.depth)
        sparse = self.bm25.search_many(queries, depth)
        dense = self.dense.search_many(queries, depth)
        if self.cfg.fusion == "rrf":
            return [rrf([s, d], k, self.cfg.rrf_k) for s, d in zip(sparse, dense)]
        w = self.cfg.dense_weight
        return [weighted([s, d], [1 - w, w], k) for s, d in zip(sparse, dense)]

    def search(self, query: str, k: int = 10) -> Hits:
        return self.search_many([query], k)[0]
