"""Batch retrieval as a Ray Data stage: a dataset of queries in, (rows, pids, scores) columns out."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from kard_ray.config import RetrievalConfig
from kard_ray.fs import local_copy
from kard_ray.retrieval.open import IndexUris, open_index
from kard_ray.retrieval.passages import PassageStore


class RetrieveBatch:
    """Ray Data actor: opens the indexes once (memory-mapped), then answers batches of queries."""

    def __init__(self, uris: IndexUris, passages_uri: str, retrieval: dict[str, Any], method: str, k: int,
                 query_column: str):
        self.retriever = open_index(uris, RetrievalConfig.model_validate(retrieval), method)
        self.passages = PassageStore(local_copy(passages_uri))
        self.k, self.query_column = k, query_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        hits = self.retriever.search_many(batch[self.query_column].to_pylist(), self.k)
        rows = [h[0].tolist() for h in hits]
        batch = batch.append_column("rows", pa.array(rows, pa.list_(pa.int64())))
        batch = batch.append_column("pids", pa.array([self.passages.pids(r) for r in rows], pa.list_(pa.string())))
        return batch.append_column("scores", pa.array([h[1].tolist() for h in hits], pa.list_(pa.float64())))


def retrieve_dataset(ds, uris: IndexUris, passages_uri: str, cfg: RetrievalConfig, *, query_column: str = "query",
                     k: int | None = None, method: str | None = None, actors: int = 1, batch_size: int = 256):
    """Add ``rows``, ``pids``, ``scores`` (best first) to every row of ``ds``, searching the indexes ``uris``
    over the passage store ``passages_uri``."""
    import ray

    return ds.map_batches(
        RetrieveBatch,
        fn_constructor_kwargs={"uris": uris, "passages_uri": passages_uri, "retrieval": cfg.model_dump(),
                               "method": method or cfg.method,
                               "k": k or cfg.top_k, "query_column": query_column},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="pyarrow",
    )
