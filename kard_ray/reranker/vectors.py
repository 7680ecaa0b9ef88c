"""Passage vectors for a bi-encoder reranker: the whole KB embedded once with the trained encoder.

A bi-encoder scores ``scale * cos(query, passage)``; the passage side does not depend on the query, so
it is computed once per KB (Ray Data actor pool over the passage store, written as ``reranker/index/``:
``embeddings.npy`` memory-mapped at query time, plus a flat FAISS index that makes the trained encoder a
first stage, ``reranker.first_stage: reranker``). Reranking then costs one query encoding per hop and a dot product.
"""

from __future__ import annotations

import os

import numpy as np

from kard_ray.config import DenseConfig
from kard_ray.fs import local_copy
from kard_ray.retrieval.dense import build_dense_index
from kard_ray.retrieval.passages import PassageStore


def encoder_config(model_dir: str, max_length: int, num_gpus: float = 0.0) -> DenseConfig:
    """The dense-index settings that make ``retrieval.dense``'s machinery embed with the reranker."""
    return DenseConfig(encoder=model_dir, max_length=max_length, index="flat", num_gpus=num_gpus)


def build_passage_vectors(passages_arrow_uri: str, model_dir: str, max_length: int, out_uri: str,
                          num_gpus: float = 0.0) -> dict:
    """Embed every passage of the store (row order) with the trained encoder (``num_gpus`` per embedding actor)
    and write the index folder."""
    n_rows = len(PassageStore(local_copy(passages_arrow_uri)))
    return build_dense_index(passages_arrow_uri, n_rows, encoder_config(model_dir, max_length, num_gpus), out_uri)


def load_passage_vectors(index_dir: str) -> np.ndarray | None:
    """The stored vectors, memory-mapped (None when the folder has none: a cross-encoder, an old run)."""
    path = os.path.join(index_dir, "embeddings.npy")
    return np.load(path, mmap_mode="r") if os.path.exists(path) else None
