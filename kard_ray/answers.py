"""Final-answer parsing for teacher rationales and student generations.

Accepts a letter in the common formats ("the answer is (B)", "Answer: B", "B) ...", "(b)") and the
text of exactly one option, and says which it used. The option's text is preferred: a small
student often copies the right fact and option but writes the wrong letter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kard_ray.data.schema import LETTERS

_FINAL = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:|=)\s*:?\s*(?P<rest>[^\n]*)", re.IGNORECASE)
_LETTER_PATTERNS = [
    re.compile(r"^\s*\(?\s*([A-Za-z])\s*\)"),  # "(B) ..." or "B) ..."
    re.compile(r"^\s*([A-Za-z])\s*[.:](?:\s|$)"),  # "B. ..." / "B: ..."
    re.compile(r"^\s*([A-Za-z])\s*$"),  # just "B"
    re.compile(r"\(\s*([A-Za-z])\s*\)"),  # "(B)" anywhere in the answer statement
    re.compile(r"\boption\s+([A-Za-z])\b", re.IGNORECASE),
]
_CONCLUSION = re.compile(r"[^.!?\n]*\banswer\s+(?:is|:)[^\n]*$", re.IGNORECASE)
_YES = {"yes", "true"}
_NO = {"no", "false"}


@dataclass(frozen=True)
class ParsedAnswer:
    index: int | None
    method: str  # "option_text" | "letter" | "yes_no" | "none"

    @property
    def ok(self) -> bool:
        return self.index is not None


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _by_option_text(segment: str, options: list[str]) -> int | None:
    seg = f" {_norm(segment)} "
    hits = [i for i, o in enumerate(options) if _norm(o) and f" {_norm(o)} " in seg]
    # an option contained in a longer matching option ("fish" in "long sea fish") is not a separate match
    hits = [i for i in hits if not any(j != i and _norm(options[i]) in _norm(options[j]) for j in hits)]
    return hits[0] if len(hits) == 1 else None


def _by_letter(segment: str, n_options: int) -> int | None:
    for pat in _LETTER_PATTERNS:
        m = pat.search(segment)
        if m:
            letter = m.group(1).upper()
            if letter in LETTERS[:n_options]:
                return LETTERS.index(letter)
    return None


def _by_yes_no(segment: str, options: list[str]) -> int | None:
    lowered = [_norm(o) for o in options]
    words = set(_norm(segment).split())
    for vocab in (_YES, _NO):
        if words & vocab and not words & (_NO if vocab is _YES else _YES):
            for i, o in enumerate(lowered):
                if o in vocab:
                    return i
    return None


def answer_segment(text: str) -> str:
    """The final answer statement: after the last 'answer is' / 'Answer:', else the last non-empty line."""
    matches = list(_FINAL.finditer(text))
    if matches:
        return matches[-1].group("rest")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def parse_answer(text: str, options: list[str]) -> ParsedAnswer:
    segment = answer_segment(text)
    for method, fn in (("option_text", lambda s: _by_option_text(s, options)),
                       ("letter", lambda s: _by_letter(s, len(options))),
                       ("yes_no", lambda s: _by_yes_no(s, options))):
        idx = fn(segment)
        if idx is not None:
            return ParsedAnswer(idx, method)
    return ParsedAnswer(None, "none")


def format_answer(letter_index: int, options: list[str]) -> str:
    """The conclusion the teacher prompt asks for ('So the answer is (B) Harlow syndrome.'), for writing
    rationale-shaped text from annotations (kard_ray/teacher/annotations.py). Student targets end with
    ``kard_ray.student.formats.answer_line`` instead."""
    return f"So the answer is ({LETTERS[letter_index]}) {options[letter_index]}."


def split_options(text: str) -> tuple[str, list[str]]:
    """'Question?\\n(A) x\\n(B) y' -> ('Question?', ['x', 'y']); text without option lines has none."""
    question, options = [], []
    for line in text.splitlines():
        m = re.match(r"^\s*\(?([A-Z])[).:]\s+(.+)$", line)
        if m and ord(m.group(1)) - ord("A") == len(options):
            options.append(m.group(2).strip())
        elif not options:
            question.append(line)
    return "\n".join(question).strip(), options


def strip_conclusion(rationale: str) -> str:
    """The rationale without its final 'so the answer is ...' sentence."""
    body = _CONCLUSION.sub("", rationale.strip()).strip()
    return body or rationale.strip()


def rationale_query(rationale: str, mode: str = "reasoning") -> str:
    """What retrieval with a rationale searches for. ``reasoning`` drops the conclusion: it only repeats
    the answer's words, which pulls every passage that mentions the answer (other towns with the same
    product) above the facts the reasoning actually used. ``full`` is the rationale verbatim."""
    return strip_conclusion(rationale) if mode == "reasoning" else rationale
