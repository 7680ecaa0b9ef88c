"""The one multiple-choice schema every loader produces and every stage consumes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def render_options(options: Sequence[str], sep: str = " ") -> str:
    """'(A) x (B) y': the one way options are written, so teacher, reranker and student see the same text."""
    return sep.join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


class Question(BaseModel):
    """A multiple-choice question.

    ``answer`` indexes ``options``; ``facts`` are the knowledge statements the question needs
    (OBQA's ``fact1``, StrategyQA's ``facts``, the synthetic world's ground truth), used to
    measure retrieval recall; ``rationale`` is a reference explanation when the dataset has one.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    options: list[str] = Field(min_length=2)
    answer: int = Field(ge=0)
    rationale: str | None = None
    facts: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is blank")
        return v.strip()

    @field_validator("options")
    @classmethod
    def _options_not_blank(cls, v: list[str]) -> list[str]:
        if len(v) > len(LETTERS):
            raise ValueError(f"at most {len(LETTERS)} options are supported")
        if any(not str(o).strip() for o in v):
            raise ValueError("an option is blank")
        return [str(o).strip() for o in v]

    @model_validator(mode="after")
    def _answer_in_range(self) -> "Question":
        if self.answer >= len(self.options):
            raise ValueError(f"answer index {self.answer} is out of range for {len(self.options)} options")
        return self

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]


QUESTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.int32()),
        ("rationale", pa.string()),
        ("facts", pa.list_(pa.string())),
        ("metadata", pa.string()),  # JSON: heterogeneous per dataset
    ]
)


def questions_to_table(questions: list[Question]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in QUESTION_SCHEMA.names}
    for q in questions:
        d = q.model_dump()
        d["metadata"] = json.dumps(d["metadata"], sort_keys=True)
        for name in cols:
            cols[name].append(d[name])
    return pa.table(cols, schema=QUESTION_SCHEMA)


def questions_from_table(table: pa.Table) -> list[Question]:
    rows = table.to_pylist()
    for r in rows:
        r["metadata"] = json.loads(r["metadata"] or "{}")
    return [Question.model_validate(r) for r in rows]
