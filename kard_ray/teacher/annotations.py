"""Annotation rationales: the dataset's own annotated facts stand in for an LLM teacher.

OpenBookQA's ``fact1`` (a line of its open book) and StrategyQA's ``facts`` are human-written
evidence for each question. A rationale here is those facts as sentences, then the conclusion in
the form the teacher prompt asks for ("So the answer is (B) ..."); the student's target replaces
that conclusion with its own answer line, exactly as for an API teacher's rationale. Questions
without annotations get no rationale and are counted. Reports name the source: this is
distillation from human rationales, not from an LLM.
"""

from __future__ import annotations

from typing import Any

from kard_ray.answers import format_answer, parse_answer
from kard_ray.data.schema import Question
from kard_ray.teacher.prompts import is_yes_no

ANNOTATIONS_TEACHER = "annotations"


def as_sentence(fact: str) -> str:
    """'deep sea animals live deep in the ocean' -> 'Deep sea animals live deep in the ocean.'"""
    s = " ".join(fact.split())
    if not s:
        return s
    s = s[0].upper() + s[1:]
    return s if s[-1] in ".!?" else s + "."


def conclusion(q: Question) -> str:
    if is_yes_no(q):
        return f"So the answer is {q.answer_text.strip().lower()}."
    return format_answer(q.answer, q.options)


def annotation_rationale(q: Question) -> str | None:
    """The question's facts, then its conclusion; None when it carries no annotated facts."""
    facts = [as_sentence(f) for f in q.facts if f and f.strip()]
    return " ".join([*facts, conclusion(q)]) if facts else None


def offline_row(q: Question, sample: int, text: str, teacher: str, parsed=None) -> dict[str, Any]:
    """One rationales-table row for a rationale that cost nothing (imported or annotated)."""
    parsed = parsed or parse_answer(text, q.options)
    return {"qid": q.id, "sample": sample, "rationale": text, "parsed_answer": parsed.index,
            "parse_method": parsed.method, "correct": parsed.index == q.answer, "teacher": teacher,
            "prompt_tokens": 0, "completion_tokens": 0, "cached": True, "attempts": 0, "error": None}


def annotation_rationales(questions: list[Question]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One rationale per annotated question; the rest skipped and counted."""
    rows, skipped = [], []
    for q in questions:
        text = annotation_rationale(q)
        if text is None:
            skipped.append(q.id)
        else:
            rows.append(offline_row(q, 0, text, ANNOTATIONS_TEACHER))
    return rows, {"annotated": len(rows), "skipped_without_annotations": len(skipped),
                  "skipped_examples": skipped[:5]}
