"""Exactness of the BM25 engine against rank_bm25, and sharded == unsharded."""

import numpy as np
import pytest
from conftest import shared
from rank_bm25 import BM25Okapi

from kard_ray.data import load_documents, load_questions
from kard_ray.retrieval.bm25 import BM25Index, BM25Params, build_bm25_index, select_topk
from kard_ray.retrieval.tokenizer import Tokenizer


def build(tmp_path, texts, shards=1, tokenizer=Tokenizer(), params=BM25Params(), name="idx"):
    out = str(tmp_path / f"{name}{shards}")
    build_bm25_index(lambda a, b: texts[a:b], len(texts), out, tokenizer, params, shards=shards)
    return BM25Index(out)


@pytest.fixture(scope="module")
def open_book():
    docs, _ = load_documents(str(shared("obqa/openbook.txt")))
    qs, _ = load_questions(str(shared("obqa/obqa_dev.jsonl")))
    return [d.text for d in docs], [q.question for q in qs]


@pytest.mark.data
@pytest.mark.parametrize("params, tokenizer", [
    (BM25Params(), Tokenizer()),
    (BM25Params(k1=1.2, b=0.5, epsilon=0.1), Tokenizer(stopwords="none")),
    (BM25Params(k1=0.9, b=0.4), Tokenizer(stemmer="english")),
])
def test_scores_equal_rank_bm25_on_the_open_book(tmp_path, open_book, params, tokenizer):
    texts, queries = open_book
    index = build(tmp_path, texts, tokenizer=tokenizer, params=params)
    ref = BM25Okapi([tokenizer(t) for t in texts], k1=params.k1, b=params.b, epsilon=params.epsilon)
    for q in queries[:200]:
        expected = ref.get_scores(tokenizer(q))
        np.testing.assert_allclose(index.full_scores(q), expected, rtol=0, atol=1e-6)
        rows, scores = index.search(q, 10)
        # identical top-10 up to ties: every returned score is a true top-10 score
        tenth = np.sort(expected)[::-1][min(9, len(expected) - 1)]
        assert all(expected[r] >= tenth - 1e-9 for r in rows)
        np.testing.assert_allclose(scores, expected[rows], atol=1e-6)


def test_negative_idf_floor_matches_rank_bm25(tmp_path):
    texts = ["apple banana", "apple cherry", "apple date", "banana fig"]  # 'apple' in 3 of 4: negative idf
    tok = Tokenizer(stopwords="none")
    index = build(tmp_path, texts, tokenizer=tok)
    ref = BM25Okapi([tok(t) for t in texts])
    for q in ["apple", "apple banana", "fig fig apple", "unknown"]:
        np.testing.assert_allclose(index.full_scores(q), ref.get_scores(tok(q)), atol=1e-9)


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_equals_unsharded(tmp_path, shards):
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(3, 40), p=None)) for _ in range(500)]
    texts += texts[:20]  # exact duplicates make ties
    single, sharded = build(tmp_path, texts), build(tmp_path, texts, shards=shards)
    for _ in range(100):
        q = " ".join(rng.choice(vocab, size=rng.integers(1, 6)))
        a, b = single.search(q, 10), sharded.search(q, 10)
        assert a[0].tolist() == b[0].tolist()
        assert a[1].tolist() == b[1].tolist()
        np.testing.assert_array_equal(single.full_scores(q), sharded.full_scores(q))


def test_ties_break_by_lower_row_and_empty_queries(tmp_path):
    filler = [f"filler{i} words" for i in range(6)]
    index = build(tmp_path, ["same text", "same text", "other words", "same text", *filler],
                  tokenizer=Tokenizer(stopwords="none"))
    rows, _ = index.search("same", 2)
    assert rows.tolist() == [0, 1]
    assert len(index.search("the of and", 5)[0]) == 0  # only stopwords
    rows, scores = select_topk(np.array([5, 3, 9, 1]), np.array([1.0, 2.0, 2.0, 0.5]), 2)
    assert rows.tolist() == [3, 9]


def test_score_rows_and_memory_mapping(tmp_path):
    texts = ["red apple", "green apple pie", "blue sky", "apple apple apple"]
    index = build(tmp_path, texts, shards=2)
    full = index.full_scores("apple pie")
    np.testing.assert_array_equal(index.score_rows("apple pie", [3, 2, 1]), full[[3, 2, 1]])
    assert isinstance(index.shards[0].data, np.memmap)


def test_tokenizer_is_saved_with_the_index(tmp_path):
    tok = Tokenizer(stopwords="none", stemmer="english")
    index = build(tmp_path, ["running dogs", "a cat sat", "birds fly", "fish swim"], tokenizer=tok)
    assert index.tokenizer == tok
    assert index.search("run", 1)[0].tolist() == [0]  # stemmed at query time too


@pytest.mark.parametrize("shards", [1, 3])
def test_compiled_kernel_equals_numpy_path_bitwise(tmp_path, shards):
    """The numba kernel: same rows, same scores to the bit, same ties, dense-term and sparse-only queries."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(400)]
    common = ["alpha", "beta"]  # in most passages: stored as dense rows
    texts = [" ".join([*rng.choice(common, size=rng.integers(0, 3)), *rng.choice(vocab, size=rng.integers(2, 30))])
             for _ in range(4500)]  # more rows than one kernel block (2,048)
    texts += texts[:30]  # exact duplicates make ties
    out = str(tmp_path / "idx")
    build_bm25_index(lambda a, b: texts[a:b], len(texts), out, Tokenizer(stopwords="none"), shards=shards)
    compiled, plain = BM25Index(out, kernel="numba"), BM25Index(out, kernel="numpy")
    assert any((s.dense_row >= 0).any() for s in compiled.shards)
    queries = [" ".join(rng.choice(vocab + common, size=rng.integers(1, 7))) for _ in range(150)]
    queries += ["w1 w1 w1", "nothing here", "", "alpha"]
    for k in (1, 10, 2000):
        for q, got in zip(queries, compiled.search_many(queries, k)):
            want = plain.search(q, k)
            assert got[0].tolist() == want[0].tolist(), q
            assert got[1].tolist() == want[1].tolist(), q
