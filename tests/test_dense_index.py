"""FAISS index kinds over stored vectors: the compressed IVF-PQ index re-ranks exactly from disk."""

from __future__ import annotations

import numpy as np
import pytest

from kard_ray.config import DenseConfig
from kard_ray.retrieval.dense import DenseIndex, write_dense_index


def _clustered(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, n)] + 0.4 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(a, b, k=10) -> float:
    return float(np.mean([len(set(x[0][:k]) & set(y[0][:k])) / k for x, y in zip(a, b)]))


@pytest.mark.parametrize("refine, floor", [(4, 0.95), (0, 0.5)])
def test_ivfpq_recall_against_flat(tmp_path, refine, floor):
    vecs = _clustered(6000)
    queries = _clustered(50, seed=1)
    flat_dir, pq_dir = str(tmp_path / "flat"), str(tmp_path / "pq")
    write_dense_index(vecs, DenseConfig(index="flat"), flat_dir)
    meta = write_dense_index(vecs, DenseConfig(index="ivfpq", ivf_lists=64, nprobe=16, pq_m=16, refine=refine,
                                               train_sample=3000), pq_dir)
    assert meta["index"] == "IndexIVFPQ" and meta["index_bytes"] < vecs.nbytes / 4  # compressed in memory
    flat = DenseIndex(flat_dir, encoder=object()).search_vectors(queries, 10)
    pq = DenseIndex(pq_dir, encoder=object())
    got = pq.search_vectors(queries, 10)
    assert _recall(got, flat) >= floor
    if refine:  # re-ranked scores are the exact inner products, best first
        rows, scores = got[0]
        np.testing.assert_allclose(scores, vecs[rows] @ queries[0], rtol=1e-5)
        assert np.all(np.diff(scores) <= 0) and isinstance(pq.vectors, np.memmap)


def test_ivfpq_needs_pq_m_to_divide_the_dimension(tmp_path):
    with pytest.raises(ValueError, match="must divide"):
        write_dense_index(_clustered(2000, d=60), DenseConfig(index="ivfpq", pq_m=16, ivf_lists=16,
                                                              train_sample=1000), str(tmp_path / "x"))
