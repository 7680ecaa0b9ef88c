"""Random access to passage texts without loading the KB: an Arrow IPC file, memory-mapped."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa


class PassageStore:
    """Rows of ``kb/passages.arrow`` by integer row number; pages are read on demand by the OS."""

    def __init__(self, path: str):
        self.path = path
        self.table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()

    def __len__(self) -> int:
        return self.table.num_rows

    def texts(self, rows: Sequence[int]) -> list[str]:
        return self.table["text"].take(pa.array(rows, pa.int64())).to_pylist()

    def pids(self, rows: Sequence[int]) -> list[str]:
        return self.table["pid"].take(pa.array(rows, pa.int64())).to_pylist()


def write_passage_store(table: pa.Table, path: str) -> None:
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65536)
