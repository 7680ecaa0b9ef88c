"""``kb`` stage body: documents -> passages with Ray Data, then a deterministic, deduplicated table.

Reading is parallel across files; chunking is parallel across blocks of documents. The gathered
passages are ordered by (source file, document, chunk), so passage rows and ids do not depend on
how Ray scheduled the work, then exact duplicates (after whitespace normalisation) are dropped,
keeping the first occurrence.

Ids: ``pid = "<doc_id>#<chunk>"`` is stable across rebuilds; the integer ``row`` (position in
``passages.parquet``) is what the indexes store.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from kard_ray.config import ChunkingConfig, KBConfig
from kard_ray.data.kb_sources import (
    FOLDER_SUFFIXES,
    detect_kb_format,
    folder_doc_id,
    iter_documents,
    iter_folder_file,
)
from kard_ray.data.records import MalformedRecord, ReadReport
from kard_ray.kb.chunking import chunk_text

PASSAGE_SCHEMA = pa.schema([("pid", pa.string()), ("doc_id", pa.string()), ("title", pa.string()),
                            ("text", pa.string())])
REPORT_ROW = -1  # doc_idx of the one row per file that carries its ReadReport


def expand_sources(paths: list[str], fmt: str) -> list[dict[str, Any]]:
    """(file_idx, path, format, doc_id) for every file to read; a folder of text files is one source each,
    its ``doc_id`` the same as ``kard data check --kb`` gives it (empty for other sources)."""
    from kard_ray.artifacts import resolve_fs

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
            if f == "folder":  # each .txt/.md file is a document; read in groups below
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


DOC_SCHEMA = pa.schema([("file_idx", pa.int64()), ("doc_idx", pa.int64()), ("doc_id", pa.string()),
                        ("title", pa.string()), ("text", pa.string()), ("report", pa.string())])


class ReadDocuments:
    """Ray Data map_batches over source files: yields their documents in blocks, then one report row.

    A generator, so a worker never holds a large file's documents as Python objects at once.
    Errors travel as data in the report row: Ray's exception wrappers would lose their type.
    """

    def __init__(self, on_malformed: str, block_docs: int = 8192):
        self.on_malformed, self.block_docs = on_malformed, block_docs

    def __call__(self, batch: dict[str, Any]):
        for path, fmt, fidx, doc_id in zip(batch["path"], batch["format"], batch["file_idx"], batch["doc_id"]):
            yield from self._one_file(str(path), str(fmt), int(fidx), str(doc_id))

    def _one_file(self, path: str, fmt: str, fidx: int, doc_id: str):
        report = ReadReport(source=path)
        summary: dict[str, Any] = {}
        buf: list[tuple[str, str, str]] = []
        n = 0
        try:
            for doc in self._read(path, fmt, doc_id, report):
                buf.append(doc)
                if len(buf) >= self.block_docs:
                    yield self._table(fidx, n, buf)
                    n += len(buf)
                    buf = []
        except MalformedRecord as err:
            buf, summary["error"] = [], [err.source, err.line, err.reason]
        if buf:
            yield self._table(fidx, n, buf)
        yield pa.table({"file_idx": [fidx], "doc_idx": [REPORT_ROW], "doc_id": [""], "title": [""], "text": [""],
                        "report": [json.dumps({**report.as_dict(), **summary})]}, schema=DOC_SCHEMA)

    @staticmethod
    def _table(fidx: int, first: int, docs: list[tuple[str, str, str]]) -> pa.Table:
        return pa.table({"file_idx": [fidx] * len(docs), "doc_idx": list(range(first, first + len(docs))),
                         "doc_id": [d[0] for d in docs], "title": [d[1] for d in docs],
                         "text": [d[2] for d in docs], "report": [""] * len(docs)}, schema=DOC_SCHEMA)

    def _read(self, path: str, fmt: str, doc_id: str, report: ReadReport):
        if fmt == "folder-file":
            report.format = "folder"
            docs = iter_folder_file(path, doc_id, report)
        else:
            docs = iter_documents(path, fmt, self.on_malformed, report)
        for d in docs:
            yield d.id, d.title, d.text


def chunk_batch(batch: pa.Table, chunking: dict[str, Any]) -> pa.Table:
    """Ray Data map_batches: documents -> passages (report rows pass through)."""
    cfg = ChunkingConfig.model_validate(chunking)
    cols: dict[str, list[Any]] = {k: [] for k in ("file_idx", "doc_idx", "chunk", "doc_id", "title", "text",
                                                   "report")}
    for r in batch.to_pylist():
        pieces = [r["text"]] if r["doc_idx"] == REPORT_ROW else chunk_text(r["text"], cfg)
        for c, text in enumerate(pieces):
            for k, v in (("file_idx", r["file_idx"]), ("doc_idx", r["doc_idx"]), ("chunk", c),
                         ("doc_id", r["doc_id"]), ("title", r["title"]), ("text", text),
                         ("report", r["report"])):
                cols[k].append(v)
    return pa.table(cols, schema=pa.schema([("file_idx", pa.int64()), ("doc_idx", pa.int64()),
                                            ("chunk", pa.int64()), ("doc_id", pa.string()),
                                            ("title", pa.string()), ("text", pa.string()),
                                            ("report", pa.string())]))


def chunk_with_ray(paths: list[str], kb: KBConfig, blocks: int) -> tuple[pa.Table, dict[str, Any]]:
    """Run read + chunk on Ray Data; return the ordered, deduplicated passages and the counts."""
    import ray

    sources = expand_sources(paths, kb.format)
    ds = ray.data.from_items(sources, override_num_blocks=min(len(sources), blocks))
    ds = ds.map_batches(ReadDocuments(kb.on_malformed), batch_size=1, batch_format="numpy")
    ds = ds.map_batches(chunk_batch, fn_kwargs={"chunking": kb.chunking.model_dump()}, batch_format="pyarrow",
                        batch_size=2048)
    parts = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not parts:
        raise ValueError("the knowledge base produced no rows")
    table = pa.concat_tables(parts)
    return finalize_passages(table, kb.dedupe)


def finalize_passages(table: pa.Table, dedupe: bool) -> tuple[pa.Table, dict[str, Any]]:
    """Order rows deterministically, split off read reports, drop exact duplicates; count everything."""
    is_report = pc.equal(table["doc_idx"], REPORT_ROW)
    reports = [json.loads(r) for r in table.filter(is_report).sort_by("file_idx")["report"].to_pylist()]
    for r in reports:
        if "error" in r:
            raise MalformedRecord(*r["error"])
    passages = table.filter(pc.invert(is_report)).sort_by([("file_idx", "ascending"), ("doc_idx", "ascending"),
                                                           ("chunk", "ascending")])
    counts: dict[str, Any] = {
        "files": len(reports),
        "documents": sum(r["rows"] for r in reports),
        "documents_skipped": sum(r["skipped"] for r in reports),
        "chunks": passages.num_rows,
    }
    if dedupe and passages.num_rows:
        idx = pa.array(range(passages.num_rows), pa.int64())
        first = (pa.table({"text": passages["text"], "i": idx}).group_by("text", use_threads=False)
                 .aggregate([("i", "min")])["i_min"])
        keep = pc.sort_indices(first)
        passages = passages.take(pc.take(first, keep))
    counts["duplicates_dropped"] = counts["chunks"] - passages.num_rows
    counts["passages"] = passages.num_rows
    if passages.num_rows == 0:
        raise ValueError("the knowledge base holds no non-empty passages")
    pid = pc.binary_join_element_wise(passages["doc_id"], pc.cast(passages["chunk"], pa.string()), "#")
    if pc.count_distinct(pid).as_py() != len(pid):
        dup = pc.value_counts(pid).filter(pc.greater(pc.struct_field(pc.value_counts(pid), [1]), 1))
        raise ValueError(f"document ids repeat across the knowledge base, e.g. {dup[0]['values']}; "
                         "give each document a unique id")
    out = pa.table({"pid": pid, "doc_id": passages["doc_id"], "title": passages["title"],
                    "text": passages["text"]}, schema=PASSAGE_SCHEMA)
    examples = [e for r in reports for e in r["examples"]][:10]
    return out, {**counts, "skipped_examples": examples}
