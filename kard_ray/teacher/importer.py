"""Bring your own rationales: a JSONL of existing teacher outputs into the rationales table.

Accepts the ThoughtSource export (``id, question, choices, gold, rationale, teacher, teacher_answer,
teacher_correct``; e.g. real gpt-3.5-turbo / gpt-4 rationales for StrategyQA) and the simple form
``{qid, rationale, teacher?}``. Rows are matched to the run's questions by id, else by the
question's text (ThoughtSource renumbers StrategyQA's ids); the answer is
parsed from the rationale (or ``teacher_answer``) exactly as for a live teacher.
"""

from __future__ import annotations

from typing import Any

from kard_ray.answers import parse_answer
from kard_ray.data.records import MalformedRecord, ReadReport, iter_jsonl, read_text
from kard_ray.data.schema import Question
from kard_ray.teacher.annotations import offline_row


def import_rationales(path: str, questions: dict[str, Question]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    report = ReadReport(source=path, format="rationales-jsonl")
    rows: list[dict[str, Any]] = []
    samples: dict[str, int] = {}
    unmatched = 0
    by_text = {" ".join(q.question.lower().split()): q for q in questions.values()}
    for line, raw in iter_jsonl(path, read_text(path), report, "error"):
        if not isinstance(raw, dict) or not raw.get("rationale"):
            raise MalformedRecord(path, line, "a rationale record needs a non-empty 'rationale'")
        q = questions.get(str(raw.get("qid") or raw.get("id") or ""))
        if q is None and raw.get("question"):
            q = by_text.get(" ".join(str(raw["question"]).lower().split()))
        if q is None:
            unmatched += 1
            continue
        qid = q.id
        text = raw["rationale"].strip()
        parsed = parse_answer(text, q.options)
        if not parsed.ok and raw.get("teacher_answer"):
            parsed = parse_answer(f"The answer is {raw['teacher_answer']}", q.options)
        sample = samples.get(qid, 0)
        samples[qid] = sample + 1
        report.rows += 1
        rows.append(offline_row(q, sample, text, str(raw.get("teacher") or "imported"), parsed))
    return rows, {"imported": report.rows, "unmatched": unmatched}
