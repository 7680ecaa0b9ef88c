"""Student input/target formats: one source of truth for training *and* inference.

The prompt templates are files (``kard_ray/templates/student_<method>.txt``); the target is the
teacher's rationale without its own conclusion, then one answer line with the option's text *and* its letter
(``Answer: Harlow syndrome (B)``); answer parsing prefers the text, which a small student copies
from its own rationale far more reliably than it picks a letter.
Packing fits k passages into the model's input budget by trimming passages, never the question
or the options.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from kard_ray.answers import strip_conclusion
from kard_ray.data.schema import LETTERS, render_options

Method = Literal["kard", "rd", "ft"]
METHODS: tuple[Method, ...] = ("kard", "rd", "ft")
WITH_RATIONALE = {"kard": True, "rd": True, "ft": False}
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MIN_PASSAGE_TOKENS = 4  # a passage trimmed below this is dropped rather than kept as a fragment


@lru_cache(maxsize=None)
def template(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown student method {method!r}; choose one of {', '.join(METHODS)}")
    return (TEMPLATES / f"student_{method}.txt").read_text(encoding="utf-8")


def answer_line(options: list[str], answer: int) -> str:
    """The option's text first, so a small model copies it from its own rationale, then the letter."""
    return f"Answer: {options[answer]} ({LETTERS[answer]})"


_ANSWER_LINE_DONE = re.compile(r"Answer:[^\n]*\([A-Z]\)")  # what answer_line writes, up to its letter


def answer_line_done(text: str) -> bool:
    """Whether a generation has written its answer line completely: nothing after it is ever parsed."""
    return _ANSWER_LINE_DONE.search(text) is not None


def format_fingerprint() -> str:
    """Changes whenever a template or the answer format changes, so trained students are rebuilt."""
    probe = answer_line(["x", "y"], 1) + "|" + strip_conclusion("a. So the answer is (A) x.")
    return hashlib.sha256("".join(template(m) for m in METHODS).encode() + probe.encode()).hexdigest()[:12]


def target_text(method: str, rationale: str | None, options: list[str], answer: int) -> str:
    if not WITH_RATIONALE[method]:
        return answer_line(options, answer)
    if not rationale:
        raise ValueError(f"method {method!r} trains on rationales, but this example has none")
    return f"{strip_conclusion(rationale)}\n{answer_line(options, answer)}"


def render(method: str, question: str, options: list[str], passages: list[str] | None = None) -> str:
    text = template(method)
    fields = {"question": question.strip(), "options": render_options(options)}
    if "{passages}" in text:
        fields["passages"] = "\n".join(f"- {p.strip()}" for p in passages or []) or "- (none)"
    return text.format(**fields)


@dataclass(frozen=True)
class Prompt:
    text: str
    passages_kept: int
    passages_trimmed: int


def _allocate(lengths: list[int], budget: int) -> list[int]:
    """Water-filling: short passages keep all their tokens, long ones share what is left equally."""
    alloc = [0] * len(lengths)
    left = budget
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for n_left, i in zip(range(len(order), 0, -1), order):
        alloc[i] = max(0, min(lengths[i], left // n_left))
        left -= alloc[i]
    return alloc


def build_prompt(tokenizer, method: str, question: str, options: list[str], passages: list[str] | None,
                 max_tokens: int) -> Prompt:
    """The prompt for ``method`` within ``max_tokens``: passages are trimmed (then dropped) to fit;
    the instruction, question and options are always complete, even when they alone exceed it."""
    passages = [p for p in (passages or []) if p and p.strip()]
    if "{passages}" not in template(method) or not passages:
        return Prompt(render(method, question, options, []), 0, 0)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    full = render(method, question, options, passages)
    if count(full) <= max_tokens:
        return Prompt(full, len(passages), 0)
    ids = [tokenizer(p.strip(), add_special_tokens=False)["input_ids"] for p in passages]
    per_line = count(render(method, question, options, ["x", "x"])) - count(render(method, question, options, ["x"]))
    budget = max_tokens - count(render(method, question, options, [])) - per_line * len(passages)
    for _ in range(8):  # token counts of joined text differ slightly from the sum of the parts
        # the best-ranked passages first: drop from the bottom until every kept one gets a useful share
        n = len(ids)
        alloc = _allocate([len(x) for x in ids[:n]], budget)
        while n > 1 and min(alloc) < MIN_PASSAGE_TOKENS:
            n -= 1
            alloc = _allocate([len(x) for x in ids[:n]], budget)
        kept = [tokenizer.decode(x[:a], skip_special_tokens=True)
                for x, a in zip(ids, alloc) if a >= MIN_PASSAGE_TOKENS]
        text = render(method, question, options, kept)
        over = count(text) - max_tokens
        if over <= 0 or not kept:
            break
        budget -= max(over, 2)
    trimmed = sum(1 for x, a in zip(ids, alloc) if MIN_PASSAGE_TOKENS <= a < len(x))
    return Prompt(text, len(kept), trimmed)
