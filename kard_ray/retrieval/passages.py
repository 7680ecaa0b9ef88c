"""Random access to passage texts without loading the KB: Arrow IPC shards, memory-mapped.

``kb/passages.arrow`` is a folder of ``shard-NNNNN.arrow`` files whose rows, in shard-name order, are the
KB's rows (run directories from before streaming KBs hold one ``passages.arrow`` file; both open here).
A process holds only the pages it touches, so a 10M-passage store costs its page cache, not its heap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from kard_ray.fs import local_copy

SHARD_GLOB = "shard-*.arrow"


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.arrow"


def shard_paths(path: str) -> list[str]:
    """The store's files in row order: the file itself, or a folder's shards by name."""
    if not os.path.isdir(path):
        return [path]
    return [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.startswith("shard-") and n.endswith(".arrow")]


def _open(path: str) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()


class PassageStore:
    """Rows of the passage store by integer row number; pages are read on demand by the OS."""

    def __init__(self, path: str):
        self.path = path
        tables = [_open(p) for p in shard_paths(path)]
        if not tables:
            raise FileNotFoundError(f"no passage shards in {path}")
        self.table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]  # zero-copy: chunks stay mapped
        lengths = [len(c) for c in self.table["text"].chunks]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def __len__(self) -> int:
        return self.table.num_rows

    def _take(self, column: str, rows: Sequence[int]) -> list[str]:
        """Values at ``rows``, taken chunk by chunk: ``ChunkedArray.take`` would first concatenate the whole
        column (a copy of the KB, and an offset overflow past 2 GB of text)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"passage rows out of range [0, {len(self)})")
        chunk = np.searchsorted(self._starts, rows, side="right") - 1
        out: list[str] = [""] * len(rows)
        col = self.table[column]
        for c in np.unique(chunk):
            at = np.flatnonzero(chunk == c)
            values = col.chunk(int(c)).take(pa.array(rows[at] - self._starts[c])).to_pylist()
            for i, v in zip(at, values):
                out[i] = v
        return out

    def texts(self, rows: Sequence[int]) -> list[str]:
        return self._take("text", rows)

    def pids(self, rows: Sequence[int]) -> list[str]:
        return self._take("pid", rows)

    def text_range(self, start: int, end: int) -> list[str]:
        return self.table["text"].slice(start, end - start).to_pylist()


def read_text_range(arrow_uri: str, start: int, end: int) -> list[str]:
    """Texts of rows [start, end) of a store at a path or URI (a remote one is cached locally): what Ray
    tasks that index or embed a row range call, so no task receives texts from the driver."""
    return PassageStore(local_copy(arrow_uri)).text_range(start, end)


def write_passage_store(table: pa.Table, path: str) -> None:
    """One shard file (record batches of 64k rows, so a reader maps them without copying)."""
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65536)


def shard_bounds(n_rows: int, shards: int, shard_rows: int | None = None) -> list[tuple[int, int]]:
    """Row ranges of ``shards`` equal shards, more when needed so that none exceeds ``shard_rows`` rows
    (the BM25 and FAISS shards of a KB are cut by this)."""
    if shard_rows:
        shards = max(shards, -(-n_rows // shard_rows))
    shards = max(1, min(shards, n_rows))
    edges = np.linspace(0, n_rows, shards + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
