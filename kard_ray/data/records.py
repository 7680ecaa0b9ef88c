"""Reading records line by line with errors that say where, and an optional skip-and-count mode."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from kard_ray.fs import resolve_fs

T = TypeVar("T")
OnMalformed = Literal["error", "skip"]


class MalformedRecord(ValueError):
    """A record that cannot be read; the message starts with ``file:line``."""

    def __init__(self, source: str, line: int, reason: str):
        self.source, self.line, self.reason = source, line, reason
        super().__init__(f"{source}:{line}: {reason}")


@dataclass
class ReadReport:
    """What a loader read: rows kept, and the malformed ones it skipped (when allowed to)."""

    source: str
    format: str = ""
    rows: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def skip(self, err: MalformedRecord) -> None:
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(str(err))

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "rows": self.rows, "skipped": self.skipped,
                "examples": self.examples}


def describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
        return "; ".join(parts)
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc) or type(exc).__name__


def convert_records(
    records: Iterator[tuple[int, Any]],
    convert: Callable[[Any], T],
    report: ReadReport,
    on_malformed: OnMalformed,
) -> Iterator[T]:
    """Apply ``convert`` to (line, raw) pairs; a failure names the file and line or is counted."""
    for line, raw in records:
        try:
            item = convert(raw)
        except MalformedRecord as err:
            bad = err
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            bad = MalformedRecord(report.source, line, describe(exc))
        else:
            report.rows += 1
            yield item
            continue
        if on_malformed == "error":
            raise bad
        report.skip(bad)


def iter_jsonl(path: str, text: str, report: ReadReport, on_malformed: OnMalformed) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; bad JSON handled like any bad record."""
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield no, json.loads(line)
        except json.JSONDecodeError as exc:
            err = MalformedRecord(path, no, f"invalid JSON ({exc.msg} at column {exc.colno})")
            if on_malformed == "error":
                raise err from None
            report.skip(err)


def read_text(path: str) -> str:
    """Read a UTF-8 file from a local path or URI; undecodable bytes are an error naming the byte offset."""
    fs, p = resolve_fs(path)
    with fs.open_input_stream(p) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MalformedRecord(path, line, f"not valid UTF-8 (byte offset {exc.start})") from None
