"""Multi-hop reranking (no Ray): the plan, its candidates, and training-time query expansion."""

import numpy as np
import pytest

from kard_ray.reranker.hops import hop_plan, hop_query, multi_hop_rerank, training_hop
from kard_ray.reranker.train import build_batch
from kard_ray.retrieval.bm25 import BM25Index, build_bm25_index
from kard_ray.retrieval.tokenizer import Tokenizer

# A two-hop world in miniature: the region fact never names the person the question asks about.
KB = [
    "Vorna Tesk was born in Famere.",              # 0: bridge fact (names the person)
    "Brill lies in the region of Ostwald.",        # 1: same region, other town (wins BM25's tie)
    "Famere lies in the region of Ostwald.",       # 2: the fact the question cannot find
    "Dunmere lies in the region of Karsk.",        # 3
    "Tolby lies in the region of Karsk.",          # 4
    "Famere is known for plum brandy.",            # 5
    "Ilsa Mott was born in Tolby.",
    "Orin Vale was born in Dunmere.",
    "Dunmere is known for rope bridges.",
    "Tolby is known for blue wool.",
]
QUESTION = "In which region was Vorna Tesk born? (A) Ostwald (B) Karsk"


@pytest.fixture(scope="module")
def bm25(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hops") / "bm25")
    build_bm25_index(lambda a, b: KB[a:b], len(KB), out, Tokenizer())
    return BM25Index(out)


def rank(bm25, hops, k=2, kappa=8):
    """BM25 stands in for both stages here: a reranker is any (query, rows, texts) -> scores function."""
    def score(q, rows, texts):
        assert texts == [KB[r] for r in rows]
        return bm25.score_rows(q, rows)

    return multi_hop_rerank(QUESTION, search=lambda q, n: bm25.search(q, n)[0], score=score,
                            texts=lambda rows: [KB[r] for r in rows], k=k, kappa=kappa, hops=hops)


def test_one_hop_cannot_place_the_bridge_fact_but_two_hops_do(bm25):
    one, _ = rank(bm25, hops=1)
    two, scores = rank(bm25, hops=2)
    assert one.tolist() == [0, 1]
    assert two.tolist() == [0, 2] and len(scores) == 2


def test_plan_expands_the_query_with_the_chosen_passage_and_never_repeats_one():
    plan = hop_plan("q", k=3, kappa=5, hops=2)
    assert next(plan) == ("search", "q", 5)
    assert plan.send([(1, "one"), (2, "two")]) == ("score", "q", [(1, "one"), (2, "two")])
    assert plan.send([0.1, 0.9]) == ("search", "q two", 5)            # hop 2 asks with the best passage
    kind, q, items = plan.send([(2, "two"), (3, "three")])            # 2 was chosen: not a candidate again
    assert (kind, q, items) == ("score", "q two", [(3, "three"), (1, "one")])  # new finds first, then hop 1's
    with pytest.raises(StopIteration) as done:
        plan.send([0.2, 0.5])
    assert [(c[0], s) for c, s in done.value.value] == [(2, 0.9), (1, 0.5), (3, 0.2)]


def test_plan_stops_when_the_first_stage_finds_nothing():
    plan = hop_plan("q", k=3, kappa=5, hops=2)
    next(plan)
    with pytest.raises(StopIteration) as done:
        plan.send([])
    assert done.value.value == []


def test_training_hop_moves_the_rationales_best_into_the_query():
    targets = np.array([3.0, 9.0, 1.0, 5.0])
    given, keep = training_hop(np.random.default_rng(0), 1, targets)
    assert given.size == 0 and keep.tolist() == [0, 1, 2, 3]
    seen = set()
    for seed in range(20):
        given, keep = training_hop(np.random.default_rng(seed), 3, targets)
        seen.add(len(given))
        assert given.tolist() == [1, 3][: len(given)] and sorted([*given, *keep]) == [0, 1, 2, 3]
    assert seen == {0, 1, 2}
    assert hop_query("q", ["  a. ", "b."]) == "q a. b."


class Store:
    def texts(self, rows):
        return [KB[r] for r in rows]


def test_two_hop_training_batches_expand_some_queries_and_drop_that_passage():
    row = {"query": QUESTION, "cand_rows": [0, 5, 2, 1, 3, 4], "cand_sources": [3, 2, 1, 3, 2, 2],
           "cand_targets": [9.0, 1.0, 8.0, 2.0, 0.5, 0.4]}
    queries, texts, targets, mask = build_batch([row] * 16, Store(), np.random.default_rng(0), n=4, hops=2)
    expanded = [i for i, q in enumerate(queries) if q != QUESTION]
    assert 0 < len(expanded) < 16
    for i in expanded:
        assert queries[i] == hop_query(QUESTION, [KB[0]])
        assert KB[0] not in texts[4 * i:4 * i + 4] and texts[4 * i] == KB[2]  # next best leads the list
        assert targets[i, 0] == 8.0 and bool(mask[i].all())


def test_known_first_hop_candidates_are_not_searched_again(bm25):
    calls = []

    def search(q, n):
        calls.append(q)
        return bm25.search(q, n)[0]

    def score(q, rows, texts):
        return bm25.score_rows(q, rows)

    first = bm25.search(QUESTION, 8)[0]
    rows, _ = multi_hop_rerank(QUESTION, search=search, score=score, texts=lambda rs: [KB[r] for r in rs], k=2,
                               kappa=8, hops=2, first_rows=first)
    assert rows.tolist() == rank(bm25, hops=2)[0].tolist() == [0, 2]
    assert calls == [hop_query(QUESTION, [KB[0]])]  # only the second hop searched
