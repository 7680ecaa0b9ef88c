"""``kb`` stage body: documents -> passages, streamed through Ray; no process ever holds the KB.

Three passes, each resumable (its outputs have deterministic names and are written atomically):

1. **read + chunk** (Ray Data, parallel across files): each source file is read as a stream of documents,
   chunked, and written as *staged parts* of at most ``part_rows`` passages, named by (file, sequence), so
   the parts' name order is the KB's order (source file, document, chunk) whatever Ray scheduled. Each
   passage carries a 128-bit BLAKE2b hash of its text and of its pid. A file's marker, written last,
   records its parts and read report; a resumed build skips files that have one.
2. **dedupe** (Ray tasks, hash-partitioned): bucket ``b`` reads only the hash columns of every part, keeps
   the rows whose text hash falls in ``b``, and marks every row but the first (in KB order) of each text as
   dropped. Exact up to a 128-bit hash collision (about N^2 / 2^129: 1e-25 at 10M passages). The same tasks
   check that no pid (``"<doc_id>#<chunk>"``) names two different texts.
3. **write** (Ray tasks, one per part): drop the marked rows, write ``passages.parquet/part-NNNNN.parquet``
   and the memory-mappable ``passages.arrow/shard-NNNNN.arrow``. The driver only sees counts.

Ids: ``pid`` is stable across rebuilds, part sizes and cluster sizes; the integer ``row`` (position in
the part-ordered KB) is what the indexes store.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from kard_ray.config import KBConfig
from kard_ray.data.kb_sources import (
    FOLDER_SUFFIXES,
    detect_kb_format,
    folder_doc_id,
    iter_documents,
    iter_folder_file,
)
from kard_ray.data.records import MalformedRecord, ReadReport
from kard_ray.fs import open_atomic, read_json_if_exists, resolve_fs, upload_file
from kard_ray.kb.chunking import chunk_text
from kard_ray.retrieval.passages import shard_name, write_passage_store

PASSAGE_SCHEMA = pa.schema([("pid", pa.string()), ("doc_id", pa.string()), ("title", pa.string()),
                            ("text", pa.string())])
STAGED_SCHEMA = pa.schema([("doc_id", pa.string()), ("chunk", pa.int32()), ("title", pa.string()),
                           ("text", pa.string()), ("t0", pa.uint64()), ("t1", pa.uint64()),
                           ("p0", pa.uint64()), ("p1", pa.uint64())])
BUCKET_ROWS = 2_000_000  # passages per dedupe bucket: ~100 MB of hashes in one task


def expand_sources(paths: list[str], fmt: str) -> list[dict[str, Any]]:
    """(file_idx, path, format, doc_id) for every file to read; a folder of text files is one source each,
    its ``doc_id`` the same as ``kard data check --kb`` gives it (empty for other sources)."""
    if not paths:
        raise ValueError("kb.paths is empty: give at least one knowledge-base file, folder or URI")
    out: list[dict[str, Any]] = []
    for path in paths:
        f = detect_kb_format(path) if fmt == "auto" else fmt
        fs, root = resolve_fs(path)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.Directory:
            scheme = path.split("://", 1)[0] + "://" if "://" in path else ""
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
            if fmt == "auto":  # a folder of data files is read file by file; otherwise each file is a document
                if any(p.endswith(".parquet") for p in files):
                    f = "parquet"
                elif any(p.endswith((".jsonl", ".json")) for p in files):
                    f = "jsonl"
            if f == "folder":  # each .txt/.md file is a document
                files = [p for p in files if p.endswith(FOLDER_SUFFIXES)]
                out.extend({"path": scheme + p, "format": "folder-file", "doc_id": folder_doc_id(root, p)}
                           for p in files)
            else:
                suffix = {"parquet": ".parquet", "jsonl": (".jsonl", ".json"), "text": (".txt",)}[f]
                out.extend({"path": scheme + p, "format": f} for p in files if p.endswith(suffix))
        else:
            out.append({"path": path, "format": f})
    if not out:
        raise ValueError(f"no knowledge-base files found under {paths}")
    for i, item in enumerate(out):
        item["file_idx"] = i
        item.setdefault("doc_id", "")
    return out


def source_documents(path: str, fmt: str, doc_id: str, on_malformed: str,
                     report: ReadReport) -> Iterator[tuple[str, str, str]]:
    """(doc_id, title, text) of one source file, streamed; shared by ``kard index`` and its tests."""
    if fmt == "folder-file":
        report.format = "folder"
        docs = iter_folder_file(path, doc_id, report)
    else:
        docs = iter_documents(path, fmt, on_malformed, report)
    for d in docs:
        yield d.id, d.title, d.text


def hash128(text: str) -> tuple[int, int]:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


# --------------------------------------------------------------------------- pass 1: read + chunk


def part_file(staging: str, file_idx: int, seq: int) -> str:
    return f"{staging}/part-{file_idx:06d}-{seq:06d}.parquet"


def marker_file(staging: str, file_idx: int) -> str:
    return f"{staging}/file-{file_idx:06d}.json"


def _write_parquet(table: pa.Table, uri: str) -> None:
    with open_atomic(uri) as f:
        pq.write_table(table, f)


def read_and_chunk(batch: dict[str, Any], kb: dict[str, Any], staging: str, part_rows: int) -> dict[str, list[str]]:
    """Ray Data map_batches over source files: staged parts written, one summary row out per file."""
    chunker = FileChunker(KBConfig.model_validate(kb), staging, part_rows)
    out = []
    for path, fmt, fidx, doc_id in zip(batch["path"], batch["format"], batch["file_idx"], batch["doc_id"]):
        marker = marker_file(staging, int(fidx))
        summary = read_json_if_exists(marker)  # a file finished before a kill is not read again
        resumed = summary is not None
        if summary is None:
            summary = chunker(str(path), str(fmt), int(fidx), str(doc_id))
            with open_atomic(marker) as f:
                f.write(json.dumps(summary).encode())
        out.append(json.dumps({**summary, "resumed": resumed}))
    return {"summary": out}


class FileChunker:
    """One source file -> staged parts of at most ``part_rows`` passages, and its summary."""

    def __init__(self, kb: KBConfig, staging: str, part_rows: int):
        self.kb, self.staging, self.part_rows = kb, staging, part_rows

    def __call__(self, path: str, fmt: str, fidx: int, doc_id: str) -> dict[str, Any]:
        report = ReadReport(source=path)
        summary: dict[str, Any] = {"file_idx": fidx, "parts": []}
        cols: dict[str, list[Any]] = {n: [] for n in STAGED_SCHEMA.names}

        def flush() -> None:
            name = part_file(self.staging, fidx, len(summary["parts"]))
            _write_parquet(pa.table(cols, schema=STAGED_SCHEMA), name)
            summary["parts"].append({"name": os.path.basename(name), "rows": len(cols["text"])})
            for v in cols.values():
                v.clear()

        try:
            for did, title, text in source_documents(path, fmt, doc_id, self.kb.on_malformed, report):
                for c, piece in enumerate(chunk_text(text, self.kb.chunking)):
                    t0, t1 = hash128(piece)
                    p0, p1 = hash128(f"{did}#{c}")
                    for k, v in (("doc_id", did), ("chunk", c), ("title", title), ("text", piece),
                                 ("t0", t0), ("t1", t1), ("p0", p0), ("p1", p1)):
                        cols[k].append(v)
                    if len(cols["text"]) >= self.part_rows:
                        flush()
        except MalformedRecord as err:
            summary["error"] = [err.source, err.line, err.reason]
        if cols["text"]:
            flush()
        return {**summary, "report": report.as_dict()}


# --------------------------------------------------------------------------- pass 2: dedupe


def _hash_columns(staging: str, names: list[str]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    fs, root = resolve_fs(staging)
    for part_no, name in enumerate(names):
        t = pq.read_table(f"{root}/{name}", filesystem=fs, columns=["t0", "t1", "p0", "p1"])
        yield part_no, {c: t[c].to_numpy() for c in ("t0", "t1", "p0", "p1")}


def dedupe_bucket(staging: str, names: list[str], bucket: int, buckets: int,
                  dedupe: bool) -> tuple[np.ndarray, int]:
    """(sorted row keys ``part << 32 | row`` to drop, a key whose pid names two texts or -1) for one bucket."""
    keys, t0s, t1s = [], [], []
    pkeys, pp0, pp1, pt0 = [], [], [], []
    for part_no, h in _hash_columns(staging, names):
        row_keys = (np.int64(part_no) << 32) | np.arange(len(h["t0"]), dtype=np.int64)
        mine = (h["t0"] % np.uint64(buckets)) == bucket
        keys.append(row_keys[mine]), t0s.append(h["t0"][mine]), t1s.append(h["t1"][mine])
        pmine = (h["p0"] % np.uint64(buckets)) == bucket
        pkeys.append(row_keys[pmine]), pp0.append(h["p0"][pmine]), pp1.append(h["p1"][pmine])
        pt0.append(h["t0"][pmine])
    drops = np.empty(0, np.int64)
    if dedupe and keys:
        k, t0, t1 = np.concatenate(keys), np.concatenate(t0s), np.concatenate(t1s)
        order = np.lexsort((k, t1, t0))  # by text hash, then KB order: the first of each text is kept
        t0, t1, k = t0[order], t1[order], k[order]
        repeat = np.zeros(len(k), bool)
        repeat[1:] = (t0[1:] == t0[:-1]) & (t1[1:] == t1[:-1])
        drops = np.sort(k[repeat])
    conflict = -1
    if pkeys:
        k, p0, p1, t0 = np.concatenate(pkeys), np.concatenate(pp0), np.concatenate(pp1), np.concatenate(pt0)
        order = np.lexsort((t0, p1, p0))
        k, p0, p1, t0 = k[order], p0[order], p1[order], t0[order]
        clash = (p0[1:] == p0[:-1]) & (p1[1:] == p1[:-1]) & (t0[1:] != t0[:-1])
        if clash.any():
            conflict = int(k[1:][clash][0])
    return drops, conflict


# --------------------------------------------------------------------------- pass 3: write


def write_part(staging: str, name: str, part_no: int, parquet_uri: str, arrow_uri: str,
               *drops: np.ndarray) -> int:
    """Write one output part and shard (skipped when both exist: a resumed build); return its rows."""
    fs, root = resolve_fs(staging)
    pq_out, arrow_out = f"{parquet_uri}/part-{part_no:05d}.parquet", f"{arrow_uri}/{shard_name(part_no)}"
    out_fs, arrow_path = resolve_fs(arrow_out)
    if out_fs.get_file_info(arrow_path).type == pafs.FileType.File:
        with out_fs.open_input_file(resolve_fs(pq_out)[1]) as f:
            return pq.ParquetFile(f).metadata.num_rows
    t = pq.read_table(f"{root}/{name}", filesystem=fs, columns=["doc_id", "chunk", "title", "text"])
    lo, hi = np.int64(part_no) << 32, np.int64(part_no + 1) << 32
    dropped = np.concatenate([d[np.searchsorted(d, lo):np.searchsorted(d, hi)] - lo for d in drops]) \
        if drops else np.empty(0, np.int64)
    if len(dropped):
        keep = np.ones(t.num_rows, bool)
        keep[dropped] = False
        t = t.filter(pa.array(keep))
    pid = [f"{d}#{c}" for d, c in zip(t["doc_id"].to_pylist(), t["chunk"].to_pylist())]
    out = pa.table({"pid": pid, "doc_id": t["doc_id"], "title": t["title"], "text": t["text"]}, schema=PASSAGE_SCHEMA)
    _write_parquet(out, pq_out)
    with tempfile.TemporaryDirectory() as tmp:  # IPC files need a seekable sink: local, then streamed up
        local = os.path.join(tmp, shard_name(part_no))
        write_passage_store(out, local)
        upload_file(local, arrow_out)  # last: its presence marks the part done
    return out.num_rows


# --------------------------------------------------------------------------- the driver


def build_passages(paths: list[str], kb: KBConfig, staging: str, parquet_uri: str, arrow_uri: str) -> dict[str, Any]:
    """Run the three passes; return the counts. The driver holds per-file summaries and counts only."""
    import ray

    sources = expand_sources(paths, kb.format)
    ds = ray.data.from_items(sources, override_num_blocks=len(sources))
    ds = ds.map_batches(read_and_chunk, batch_size=1, batch_format="numpy",
                        fn_kwargs={"kb": kb.model_dump(), "staging": staging, "part_rows": kb.part_rows})
    summaries = sorted((json.loads(s) for s in ds.to_pandas()["summary"]), key=lambda s: s["file_idx"])
    for s in summaries:
        if "error" in s:
            raise MalformedRecord(*s["error"])
    parts = [p for s in summaries for p in s["parts"]]  # file order, then sequence: the KB's order
    names = [p["name"] for p in parts]
    chunks = sum(p["rows"] for p in parts)
    if chunks == 0:
        raise ValueError("the knowledge base holds no non-empty passages")

    buckets = max(1, -(-chunks // BUCKET_ROWS))
    task = ray.remote(num_returns=2)(dedupe_bucket)
    refs = [task.remote(staging, names, b, buckets, kb.dedupe) for b in range(buckets)]
    conflicts = [c for c in ray.get([r[1] for r in refs]) if c >= 0]
    if conflicts:
        part_no, row = conflicts[0] >> 32, conflicts[0] & 0xFFFFFFFF
        fs, root = resolve_fs(staging)
        t = pq.read_table(f"{root}/{names[part_no]}", filesystem=fs, columns=["doc_id", "chunk"]).slice(row, 1)
        raise ValueError(f"document ids repeat across the knowledge base, e.g. "
                         f"{t['doc_id'][0].as_py()}#{t['chunk'][0].as_py()}; give each document a unique id")
    drops = [r[0] for r in refs]
    writer = ray.remote(write_part)
    kept = ray.get([writer.remote(staging, n, i, parquet_uri, arrow_uri, *drops) for i, n in enumerate(names)])
    passages = int(sum(kept))
    reports = [s["report"] for s in summaries]
    return {"files": len(reports), "documents": sum(r["rows"] for r in reports),
            "documents_skipped": sum(r["skipped"] for r in reports), "chunks": chunks,
            "duplicates_dropped": chunks - passages, "passages": passages, "parts": len(names),
            "files_resumed": sum(s["resumed"] for s in summaries),
            "skipped_examples": [e for r in reports for e in r["examples"]][:10]}
