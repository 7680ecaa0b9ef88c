"""The ``index`` stage: BM25 (always) and dense FAISS (when used) indexes over the KB's passages."""

from __future__ import annotations

import functools

from kard_ray.artifacts import RunDir, StageResult, local_copy
from kard_ray.config import KardConfig
from kard_ray.registry import needs_dense, output


def read_text_range(arrow_uri: str, start: int, end: int) -> list[str]:
    """Texts of rows [start, end) from the passage store (memory-mapped; a remote one is cached locally)."""
    from kard_ray.retrieval.passages import PassageStore

    return PassageStore(local_copy(arrow_uri)).table["text"].slice(start, end - start).to_pylist()


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    from kard_ray.retrieval.bm25 import BM25Params, build_bm25_index
    from kard_ray.retrieval.tokenizer import Tokenizer

    r = cfg.retrieval
    n_rows = run.read_table(output("kb", "passages"), columns=["pid"]).num_rows
    texts_of = functools.partial(read_text_range, run.uri_of(output("kb", "passages_arrow")))
    meta = build_bm25_index(texts_of, n_rows, run.uri_of(output("index", "bm25")),
                            Tokenizer.from_config(r.bm25.stopwords, r.bm25.stemming),
                            BM25Params(r.bm25.k1, r.bm25.b, r.bm25.epsilon), shards=r.bm25.shards, use_ray=True)
    counts = {"passages": n_rows, "bm25_shards": len(meta["shards"]), "bm25_vocab": meta["vocab_size"],
              "bm25_postings": meta["postings"]}
    if needs_dense(cfg):
        from kard_ray.retrieval.dense import embed_passages_with_ray, write_dense_index

        emb = embed_passages_with_ray(run.uri_of(output("kb", "passages")), r.dense)
        dmeta = write_dense_index(emb, r.dense, run.uri_of(output("index", "dense")))
        counts["dense_vectors"] = dmeta["n_docs"]
    return StageResult(counts=counts)
