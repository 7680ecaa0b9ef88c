"""The ``index`` stage: BM25 (always) and dense FAISS (when used) indexes over the KB's passages.

Both build from the memory-mapped passage store by row ranges in Ray tasks (no texts pass through the
driver) and resume after a kill: BM25 from its saved counts and finished shards, dense from its finished
embedding parts (the stage keeps its folder: ``clean=False``).
"""

from __future__ import annotations

import functools

from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import KardConfig
from kard_ray.registry import needs_dense, output
from kard_ray.retrieval.bm25 import BM25Params, build_bm25_index
from kard_ray.retrieval.passages import read_text_range
from kard_ray.retrieval.tokenizer import Tokenizer


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    r = cfg.retrieval
    arrow_uri = run.uri_of(output("kb", "passages_arrow"))
    n_rows = int(run.manifest("kb")["counts"]["passages"])
    meta = build_bm25_index(functools.partial(read_text_range, arrow_uri), n_rows, run.uri_of(output("index", "bm25")),
                            Tokenizer.from_config(r.bm25.stopwords, r.bm25.stemming),
                            BM25Params(r.bm25.k1, r.bm25.b, r.bm25.epsilon), shards=r.bm25.shards, use_ray=True,
                            shard_rows=r.bm25.shard_rows)
    counts = {"passages": n_rows, "bm25_shards": len(meta["shards"]), "bm25_vocab": meta["vocab_size"],
              "bm25_postings": meta["postings"], "bm25_shards_resumed": meta["shards_resumed"]}
    if needs_dense(cfg):
        from kard_ray.retrieval.dense import build_dense_index

        dmeta = build_dense_index(arrow_uri, n_rows, r.dense, run.uri_of(output("index", "dense")))
        counts["dense_vectors"] = dmeta["n_docs"]
    return StageResult(counts=counts)
