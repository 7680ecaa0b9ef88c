"""Rationales written from the synthetic world's ground truth, in the reference teacher's own wording."""

from __future__ import annotations

import random

from kard_ray.data.schema import LETTERS, Question
from kard_ray.synth import vocabulary as V

_ROLE_VARS = {
    "born_in": ("P", "T"),
    "occupation": ("P", "O"),
    "region": ("T", "R"),
    "known_for": ("T", "X"),
}


def _sentence(rng: random.Random, relation: str, subj: str, obj: str, greedy: bool) -> str:
    templates = V.RATIONALE_TEMPLATES[relation]
    template = templates[0] if greedy else rng.choice(templates)
    s_var, o_var = _ROLE_VARS[relation]
    return V.fix_articles(template.format(**{s_var: subj, o_var: obj}))


def write_rationale(
    rng: random.Random, question: Question, chain: list[list[str]], *, greedy: bool, wrong: bool
) -> tuple[str, int]:
    """One chain-of-thought rationale ending in 'the answer is (L) text'; returns it and the chosen index.

    A *wrong* rationale keeps the first hops and replaces the last fact's object with a wrong
    option, so its conclusion is wrong in a way an answer filter must catch.
    """
    idx = question.answer
    if wrong:
        idx = rng.choice([i for i in range(len(question.options)) if i != question.answer])
    steps = []
    for hop, (relation, subj, obj) in enumerate(chain):
        if hop == len(chain) - 1:
            obj = question.options[idx]
        steps.append(_sentence(rng, relation, subj, obj, greedy))
    conclusion = (V.CONCLUSIONS[0] if greedy else rng.choice(V.CONCLUSIONS)).format(
        L=LETTERS[idx], A=question.options[idx]
    )
    return " ".join(steps + [conclusion]), idx
