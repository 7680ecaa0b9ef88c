"""Open built indexes for querying: BM25, dense or hybrid behind one ``search_many`` interface.

The indexes are named by URI (``IndexUris``); which folders of a run directory hold them is the run's
business (``kard_ray.run_readers``). Remote indexes are downloaded once per node and memory-mapped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kard_ray.config import RetrievalConfig
from kard_ray.fs import local_copy
from kard_ray.retrieval.bm25 import BM25Index
from kard_ray.retrieval.dense import DenseIndex, Encoder
from kard_ray.retrieval.hybrid import HybridRetriever


class Retriever(Protocol):
    def search_many(self, queries: Sequence[str], k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class IndexUris:
    """Where a KB's indexes are (paths or URIs): BM25, the dense index, and a trained bi-encoder with its
    stored passage vectors (which make it a first stage of its own)."""

    bm25: str
    dense: str
    encoder: str
    encoder_vectors: str


def open_index(uris: IndexUris, cfg: RetrievalConfig, method: str | None = None) -> Retriever:
    """A BM25 / dense / hybrid retriever, or ``reranker``: the trained bi-encoder over its stored vectors."""
    method = method or cfg.method
    if method == "bm25":
        return BM25Index(local_copy(uris.bm25))

    if method == "reranker":
        index_dir = _dense_dir(uris.encoder_vectors,
                               "first_stage reranker needs a trained bi-encoder (reranker.architecture=bi)")
        meta = DenseIndex.read_meta(index_dir)
        return DenseIndex(index_dir, Encoder(local_copy(uris.encoder), meta["max_length"]))

    dense = DenseIndex(_dense_dir(uris.dense))
    if method == "dense":
        return dense

    return HybridRetriever(BM25Index(local_copy(uris.bm25)), dense, cfg.hybrid, depth=cfg.top_k)


def _dense_dir(uri: str, hint: str = "build it with retrieval.dense.enabled=true (or method dense/hybrid)") -> str:
    try:
        path = local_copy(uri)
    except FileNotFoundError:
        path = uri
    if not os.path.exists(f"{path}/meta.json"):
        raise FileNotFoundError(f"no dense index at {uri}; {hint}")
    return path
