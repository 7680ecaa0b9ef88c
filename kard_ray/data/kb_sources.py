"""Knowledge-base document loaders: plain text, JSONL, a folder of .txt/.md files, parquet.

Each yields ``Document``s lazily so a large KB streams; empty documents are dropped and counted
(``ReadReport.skipped`` with a reason), malformed records name their file and line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from kard_ray.data.records import (
    MalformedRecord,
    OnMalformed,
    ReadReport,
    convert_records,
    iter_jsonl,
    read_text,
)
from kard_ray.fs import resolve_fs

KB_FORMATS = ("text", "jsonl", "folder", "parquet")
FOLDER_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def unquote(line: str) -> str:
    """OBQA's open book writes each fact in double quotes."""
    s = line.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        s = s[1:-1].strip()
    return s


def _keep(doc: Document, report: ReadReport, line: int) -> bool:
    if doc.text.strip():
        return True
    report.rows -= 1
    report.skip(MalformedRecord(report.source, line, "empty document dropped"))
    return False


def iter_text_lines(path: str, report: ReadReport) -> Iterator[Document]:
    """One passage per non-blank line."""
    stem = _stem(path)
    for no, line in enumerate(read_text(path).splitlines(), start=1):
        text = unquote(line)
        if text:
            report.rows += 1
            yield Document(id=f"{stem}:{no}", title="", text=text)


def iter_jsonl_docs(path: str, report: ReadReport, on_malformed: OnMalformed) -> Iterator[Document]:
    """JSONL records ``{id?, title?, text}``."""
    stem = _stem(path)

    def convert(item: tuple[int, object]) -> tuple[int, Document]:
        line, raw = item
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        if "text" not in raw:
            raise ValueError("missing field 'text'")
        if not isinstance(raw["text"], str):
            raise ValueError(f"'text' must be a string, got {type(raw['text']).__name__}")
        doc = Document(
            id=str(raw.get("id") or f"{stem}:{line}"), title=str(raw.get("title") or ""), text=raw["text"]
        )
        return line, doc

    numbered = ((line, (line, raw)) for line, raw in iter_jsonl(path, read_text(path), report, on_malformed))
    for line, doc in convert_records(numbered, convert, report, on_malformed):
        if _keep(doc, report, line):
            yield doc


def _title_of(path: str, text: str) -> str:
    first = text.lstrip().split("\n", 1)[0]
    if path.endswith(".md") and first.startswith("#"):
        return first.lstrip("#").strip()
    return _stem(path)


def folder_doc_id(root: str, file: str) -> str:
    """A folder file's document id: its path below the folder (``sub/a.txt``), so same-named files in
    different subfolders stay distinct. ``root`` and ``file`` are filesystem paths, without a scheme."""
    root = root.rstrip("/") + "/"
    if not file.startswith(root):
        raise ValueError(f"{file} is not under the knowledge-base folder {root}")
    return file[len(root):]


def iter_folder_file(path: str, doc_id: str, report: ReadReport) -> Iterator[Document]:
    """One .txt/.md file of a folder KB as its one document (none when it is empty)."""
    text = read_text(path)
    report.rows += 1
    doc = Document(id=doc_id, title=_title_of(path, text), text=text)
    if _keep(doc, report, 1):
        yield doc


def iter_folder(path: str, report: ReadReport) -> Iterator[Document]:
    """Every .txt/.md file under a folder is one document, its id the relative path."""
    fs, root = resolve_fs(path)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(FOLDER_SUFFIXES))
    scheme = path.split("://", 1)[0] + "://" if "://" in path else ""
    for f in files:
        yield from iter_folder_file(scheme + f, folder_doc_id(root, f), report)


def iter_parquet(path: str, report: ReadReport) -> Iterator[Document]:
    """Parquet with a ``text`` column and optional ``id`` / ``title``; read in row batches."""
    import pyarrow.parquet as pq


    fs, p = resolve_fs(path)
    pf = pq.ParquetFile(fs.open_input_file(p))
    names = pf.schema_arrow.names
    if "text" not in names:
        raise MalformedRecord(path, 1, f"parquet KB needs a 'text' column; it has {names}")
    cols = [c for c in ("id", "title", "text") if c in names]
    row = 0
    for batch in pf.iter_batches(columns=cols, batch_size=8192):
        for rec in batch.to_pylist():
            row += 1
            report.rows += 1
            doc = Document(
                id=str(rec.get("id") or f"{_stem(path)}:{row}"),
                title=str(rec.get("title") or ""),
                text=rec["text"] or "",
            )
            if _keep(doc, report, row):
                yield doc


def detect_kb_format(path: str) -> str:
    fs, p = resolve_fs(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"knowledge base not found: {path}")
    if info.type == pafs.FileType.Directory:
        return "folder"
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    return "text"


def iter_documents(
    path: str, fmt: str = "auto", on_malformed: OnMalformed = "error", report: ReadReport | None = None
) -> Iterator[Document]:
    """Stream the documents of one KB source."""
    report = report if report is not None else ReadReport(source=path)
    fmt = detect_kb_format(path) if fmt == "auto" else fmt
    report.format = fmt
    if fmt == "text":
        return iter_text_lines(path, report)
    if fmt == "jsonl":
        return iter_jsonl_docs(path, report, on_malformed)
    if fmt == "folder":
        return iter_folder(path, report)
    if fmt == "parquet":
        return iter_parquet(path, report)
    raise ValueError(f"unknown KB format {fmt!r}; choose auto or one of {', '.join(KB_FORMATS)}")


def load_documents(
    path: str, fmt: str = "auto", on_malformed: OnMalformed = "error"
) -> tuple[list[Document], ReadReport]:
    report = ReadReport(source=path)
    docs = list(iter_documents(path, fmt, on_malformed, report))
    if not docs:
        raise MalformedRecord(path, 1, "the knowledge base holds no non-empty documents")
    return docs, report
