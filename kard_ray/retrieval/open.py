"""Open a run's indexes for querying: BM25, dense or hybrid behind one ``search_many`` interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from kard_ray.artifacts import local_copy
from kard_ray.config import RetrievalConfig
from kard_ray.registry import output
from kard_ray.retrieval.passages import PassageStore


class Retriever(Protocol):
    def search_many(self, queries: Sequence[str], k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]: ...


def open_retriever(run_uri: str, cfg: RetrievalConfig, method: str | None = None) -> Retriever:
    """BM25 / dense / hybrid retriever over the run's ``index/``, or ``reranker``: the trained bi-encoder
    over its stored passage vectors (downloaded once if remote)."""
    from kard_ray.retrieval.bm25 import BM25Index

    method = method or cfg.method
    base = run_uri.rstrip("/")
    if method == "bm25":
        return BM25Index(local_copy(f"{base}/{output('index', 'bm25')}"))
    from kard_ray.retrieval.dense import DenseIndex, Encoder

    if method == "reranker":
        index_dir = _dense_dir(f"{base}/{output('reranker', 'vectors')}",
                               "first_stage reranker needs a trained bi-encoder (reranker.architecture=bi)")
        meta = DenseIndex.read_meta(index_dir)
        return DenseIndex(index_dir, Encoder(local_copy(f"{base}/{output('reranker', 'model')}"), meta["max_length"]))

    dense = DenseIndex(_dense_dir(f"{base}/{output('index', 'dense')}"))
    if method == "dense":
        return dense
    from kard_ray.retrieval.hybrid import HybridRetriever

    return HybridRetriever(BM25Index(local_copy(f"{base}/{output('index', 'bm25')}")), dense, cfg.hybrid,
                           depth=cfg.top_k)


def _dense_dir(uri: str, hint: str = "build it with retrieval.dense.enabled=true (or method dense/hybrid)") -> str:
    import os

    try:
        path = local_copy(uri)
    except FileNotFoundError:
        path = uri
    if not os.path.exists(f"{path}/meta.json"):
        raise FileNotFoundError(f"no dense index at {uri}; {hint}")
    return path


def open_passages(run_uri: str) -> PassageStore:
    return PassageStore(local_copy(f"{run_uri.rstrip('/')}/{output('kb', 'passages_arrow')}"))
