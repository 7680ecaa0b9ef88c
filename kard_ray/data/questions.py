"""Loaders from benchmark formats into ``Question``: OBQA, StrategyQA, MedQA and a generic format.

Each loader converts one raw record; ``load_questions`` handles the file format (JSONL, a JSON
array, CSV), format detection, and malformed records (an error naming file:line, or skipped and
counted in a ``ReadReport`` when ``on_malformed="skip"``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

from kard_ray.data.records import (
    MalformedRecord,
    OnMalformed,
    ReadReport,
    convert_records,
    iter_jsonl,
    read_text,
)
from kard_ray.data.schema import LETTERS, Question

FORMATS = ("obqa", "strategyqa", "medqa", "generic")


def _need(raw: Any, *keys: str) -> None:
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(map(repr, missing))}")


def from_obqa(raw: dict[str, Any], line: int = 0) -> Question:
    """OpenBookQA: HF schema (``question_stem``, ``choices{text,label}``) or the original nested one."""
    _need(raw, "id", "answerKey")
    if "question_stem" in raw:
        stem, texts, labels = raw["question_stem"], raw["choices"]["text"], raw["choices"]["label"]
    else:
        _need(raw, "question")
        stem = raw["question"]["stem"]
        texts = [c["text"] for c in raw["question"]["choices"]]
        labels = [c["label"] for c in raw["question"]["choices"]]
    if raw["answerKey"] not in labels:
        raise ValueError(f"answerKey {raw['answerKey']!r} is not one of the labels {labels}")
    facts = [raw["fact1"]] if raw.get("fact1") else []
    meta = {k: raw[k] for k in ("humanScore", "clarity", "turkIdAnonymized") if k in raw}
    return Question(
        id=str(raw["id"]),
        question=stem,
        options=list(texts),
        answer=labels.index(raw["answerKey"]),
        facts=facts,
        metadata={"dataset": "obqa", **meta},
    )


def from_strategyqa(raw: dict[str, Any], line: int = 0) -> Question:
    """StrategyQA: yes/no questions; the annotated facts become ``facts``."""
    _need(raw, "qid", "question", "answer")
    if not isinstance(raw["answer"], bool):
        raise ValueError(f"answer must be true or false, got {raw['answer']!r}")
    return Question(
        id=str(raw["qid"]),
        question=raw["question"],
        options=["yes", "no"],
        answer=0 if raw["answer"] else 1,
        facts=[f for f in raw.get("facts", []) if f],
        metadata={
            "dataset": "strategyqa",
            **{k: raw[k] for k in ("term", "description", "decomposition") if k in raw},
        },
    )


def from_medqa(raw: dict[str, Any], line: int = 0) -> Question:
    """MedQA-USMLE: ``options`` is a letter -> text mapping; ``answer_idx`` a letter."""
    _need(raw, "question", "options", "answer_idx")
    opts = raw["options"]
    if not isinstance(opts, dict) or not opts:
        raise ValueError("options must be a non-empty mapping of letters to texts")
    letters = sorted(opts)
    if raw["answer_idx"] not in opts:
        raise ValueError(f"answer_idx {raw['answer_idx']!r} is not one of the options {letters}")
    qid = raw.get("id", raw.get("realidx", f"medqa-{line}"))
    return Question(
        id=str(qid),
        question=raw["question"],
        options=[opts[k] for k in letters],
        answer=letters.index(raw["answer_idx"]),
        metadata={"dataset": "medqa", **({"meta_info": raw["meta_info"]} if "meta_info" in raw else {})},
    )


def _generic_options(raw: dict[str, Any]) -> list[str]:
    opts = raw.get("options")
    if opts is None:  # CSV with one column per letter
        opts = [raw[c] for c in LETTERS if raw.get(c) not in (None, "")]
    elif isinstance(opts, str):
        opts = json.loads(opts) if opts.lstrip().startswith("[") else opts.split("|")
    elif isinstance(opts, dict):
        opts = [opts[k] for k in sorted(opts)]
    if not isinstance(opts, list):
        raise ValueError("options must be a list, a letter mapping, or '|'-separated text")
    return [str(o) for o in opts]


def _generic_answer(answer: Any, options: list[str]) -> int:
    """An answer may be an index, a letter, or the exact text of one option."""
    if isinstance(answer, bool):
        raise ValueError("answer must be an index, a letter or an option's text, not a boolean")
    if isinstance(answer, int):
        return answer
    text = str(answer).strip()
    if text.isdigit():
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return LETTERS.index(text.upper())
    matches = [i for i, o in enumerate(options) if o.strip().lower() == text.lower()]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"answer {answer!r} is not an index, a letter, or the text of exactly one option")


def from_generic(raw: dict[str, Any], line: int = 0) -> Question:
    """The documented generic format (README): question, options, answer, optional extras."""
    _need(raw, "question", "answer")
    options = _generic_options(raw)
    facts = raw.get("facts") or []
    if isinstance(facts, str):
        facts = json.loads(facts) if facts.lstrip().startswith("[") else [facts]
    meta = raw.get("metadata") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    return Question(
        id=str(raw.get("id") or f"q{line}"),
        question=raw["question"],
        options=options,
        answer=_generic_answer(raw["answer"], options),
        rationale=raw.get("rationale") or None,
        facts=list(facts),
        metadata=meta,
    )


_CONVERTERS: dict[str, Callable[..., Question]] = {
    "obqa": from_obqa,
    "strategyqa": from_strategyqa,
    "medqa": from_medqa,
    "generic": from_generic,
}


def detect_format(first: Any) -> str:
    """Guess the dataset format from the first record's keys."""
    if isinstance(first, dict):
        if "question_stem" in first or ("answerKey" in first and isinstance(first.get("question"), dict)):
            return "obqa"
        if "qid" in first and isinstance(first.get("answer"), bool):
            return "strategyqa"
        if "answer_idx" in first and isinstance(first.get("options"), dict):
            return "medqa"
    return "generic"


def iter_json_array(path: str, text: str) -> Iterator[tuple[int, Any]]:
    """Items of a top-level JSON array with the line each one starts on."""
    dec = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text[pos:].startswith("["):
        raise MalformedRecord(path, text.count("\n", 0, pos) + 1, "expected a JSON array")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise MalformedRecord(path, text.count("\n") + 1, "unterminated JSON array")
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise MalformedRecord(path, exc.lineno, f"invalid JSON ({exc.msg})") from None
        yield line, obj


def iter_csv(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        yield reader.line_num, row


def iter_raw_records(
    path: str, report: ReadReport, on_malformed: OnMalformed = "error"
) -> Iterator[tuple[int, Any]]:
    """(line, record) pairs from a JSONL, JSON-array or CSV file."""
    text = read_text(path)
    if path.lower().endswith(".csv"):
        return iter_csv(text)
    if text.lstrip().startswith("["):
        return iter_json_array(path, text)
    return iter_jsonl(path, text, report, on_malformed)


def load_questions(
    path: str,
    fmt: str = "auto",
    on_malformed: OnMalformed = "error",
    limit: int | None = None,
) -> tuple[list[Question], ReadReport]:
    """Read a question file into ``Question``s; returns them with a report of what was read."""
    if fmt != "auto" and fmt not in _CONVERTERS:
        raise ValueError(f"unknown question format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
    report = ReadReport(source=path)
    records = iter_raw_records(path, report, on_malformed)
    first = next(records, None)
    if first is None:
        raise MalformedRecord(path, 1, "the file holds no questions")
    report.format = detect_format(first[1]) if fmt == "auto" else fmt
    convert = _CONVERTERS[report.format]
    seen: set[str] = set()

    def convert_unique(item: tuple[int, Any]) -> Question:
        q = convert(item[1], item[0])
        if q.id in seen:
            raise ValueError(f"duplicate question id {q.id!r}")
        seen.add(q.id)
        return q

    numbered = ((line, (line, raw)) for line, raw in itertools.chain([first], records))
    out: list[Question] = []
    for q in convert_records(numbered, convert_unique, report, on_malformed):
        out.append(q)
        if limit and len(out) >= limit:
            break
    return out, report
