"""Rationale prompts from template files: one per task family (lettered multiple choice, yes/no).

KARD's teacher is given the gold answer ("rationalisation", Kang et al. 2023 following STaR), so
that it explains rather than guesses; ``give_gold_answer: false`` asks it to answer on its own.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from kard_ray.config import TeacherConfig
from kard_ray.data.schema import Question, render_options

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
YES_NO = [{"yes", "no"}, {"true", "false"}]
CHOICE_SEP = "\n"  # the teacher sees one option a line


def is_yes_no(q: Question) -> bool:
    return len(q.options) == 2 and {o.strip().lower() for o in q.options} in YES_NO


@lru_cache(maxsize=16)
def _read_template(path: str | None, family: str) -> str:
    if path:
        return Path(path).read_text(encoding="utf-8")
    return (TEMPLATES / f"rationale_{family}.txt").read_text(encoding="utf-8")


@lru_cache(maxsize=4)
def _read_fewshot(path: str) -> tuple[dict, ...]:
    rows = []
    for no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if not {"question", "options", "answer", "rationale"} <= set(row):
                raise ValueError(f"{path}:{no}: a few-shot exemplar needs question, options, answer, rationale")
            rows.append(row)
    return tuple(rows)


def _gold_line(q: Question, yes_no: bool) -> str:
    if yes_no:
        return f"The correct answer is {q.answer_text.lower()}.\n"
    return f"The correct answer is ({q.answer_letter}) {q.answer_text}.\n"


def render_prompt(q: Question, cfg: TeacherConfig) -> str:
    family = "yesno" if is_yes_no(q) else "mc"
    fewshot = ""
    if cfg.fewshot:
        blocks = []
        for ex in _read_fewshot(cfg.fewshot):
            ex_q = Question(id="fewshot", question=ex["question"], options=ex["options"], answer=ex["answer"])
            choices = render_options(ex_q.options, CHOICE_SEP)
            blocks.append(f"Question: {ex_q.question}\nAnswer choices:\n{choices}\n{ex['rationale']}\n")
        fewshot = "\n".join(blocks) + "\n"
    return _read_template(cfg.template, family).format(
        fewshot=fewshot,
        question=q.question,
        choices=render_options(q.options, CHOICE_SEP),
        gold=_gold_line(q, family == "yesno") if cfg.give_gold_answer else "",
    )


def build_messages(q: Question, cfg: TeacherConfig) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return messages + [{"role": "user", "content": render_prompt(q, cfg)}]
