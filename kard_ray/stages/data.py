"""The ``data`` stage: question sets (from files, or a generated synthetic world) into normalised parquet.

Writes ``data/{train,dev,test}.parquet`` in the one question schema, and for a synthetic world
also ``data/world/`` (its KB, question files and ground truth for the reference teacher). Later
stages read questions from here, never from the original files, so every stage of a run sees
the same questions.
"""

from __future__ import annotations

import hashlib
import json

from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import KardConfig
from kard_ray.data.questions import load_questions
from kard_ray.data.schema import Question, questions_from_table, questions_to_table
from kard_ray.data.text import normalize_for_match
from kard_ray.registry import output
from kard_ray.synth.world import generate_world, world_files


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    data = cfg.data
    paths = data.split_paths()
    if data.synth is None and not paths:
        raise ValueError("data: set data.synth (a synthetic world) or at least one of data.train/dev/test")
    result = StageResult()
    splits: dict[str, list[Question]] = {}
    if data.synth is not None:
        world = generate_world(data.synth)
        for name, blob in world_files(world).items():
            run.write_bytes(f"{output('data', 'world')}/{name}", blob)
        splits = world.questions
        result.counts["kb_documents"] = len(world.documents)
        result.extra["world"] = run.uri_of(output("data", "world"))
    else:
        for split, path in paths.items():
            qs, report = load_questions(path, data.format, data.on_malformed)
            splits[split] = qs
            result.counts[f"{split}_skipped"] = report.skipped
            result.extra[f"{split}_read"] = report.as_dict()
        facts = fact_documents([q for qs in splits.values() for q in qs])
        run.write_text(output("data", "facts"), "".join(json.dumps(d) + "\n" for d in facts))
        result.counts["annotated_facts"] = len(facts)
        if data.holdout and "test" not in splits and "train" in splits:
            splits["train"], splits["test"] = hold_out(splits["train"], data.holdout, data.holdout_seed)
            result.extra["test_held_out_of"] = paths["train"]
    for split, qs in splits.items():
        qs = qs[: data.limit] if data.limit else qs
        run.write_table(output("data", split), questions_to_table(qs))
        result.counts[split] = len(qs)
    return result


def hold_out(questions: list[Question], n: int, seed: int) -> tuple[list[Question], list[Question]]:
    """(rest, held out): the n questions whose seeded id hash is smallest, each part in file order. The
    choice depends only on ids, never on the file's order or on which other questions it holds."""
    if n >= len(questions):
        raise ValueError(f"data.holdout is {n}, but the train file has only {len(questions)} questions")

    def rank(q: Question) -> str:
        return hashlib.sha256(f"{seed}:{q.id}".encode()).hexdigest()

    chosen = {q.id for q in sorted(questions, key=rank)[:n]}
    return [q for q in questions if q.id not in chosen], [q for q in questions if q.id in chosen]


def fact_documents(questions: list[Question]) -> list[dict[str, str]]:
    """The pool of annotated facts, deduplicated (case, spacing, final period), as KB documents whose id
    is the fact's hash: the same fact has the same passage id whichever files it came from."""
    seen: set[str] = set()
    docs = []
    for q in questions:
        for fact in q.facts:
            key = normalize_for_match(fact)
            if key and key not in seen:
                seen.add(key)
                docs.append({"id": "fact-" + hashlib.sha256(key.encode()).hexdigest()[:16],
                             "text": " ".join(fact.split())})
    return docs


def read_split(run_dir: RunDir, split: str) -> list[Question]:
    """The questions of one split as the data stage wrote them."""
    if not run_dir.exists(output("data", split)):
        raise FileNotFoundError(f"split {split!r} not found in {run_dir.uri}/data; run the data stage first")
    return questions_from_table(run_dir.read_table(output("data", split)))
