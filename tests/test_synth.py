import re

import numpy as np
from conftest import TINY_WORLD
from rank_bm25 import BM25Okapi

from kard_ray.config import SynthConfig
from kard_ray.data import load_documents, load_questions
from kard_ray.data.text import contains_fact
from kard_ray.synth import generate_world, write_world
from kard_ray.synth.world import world_files


def test_deterministic_per_seed():
    assert world_files(generate_world(TINY_WORLD)) == world_files(generate_world(TINY_WORLD))
    other = TINY_WORLD.model_copy(update={"seed": 8})
    assert world_files(generate_world(other))["kb.jsonl"] != world_files(generate_world(TINY_WORLD))["kb.jsonl"]


def test_held_out_entities_never_in_training_questions():
    world = generate_world(SynthConfig(seed=3))
    train_text = " ".join(q.question for q in world.questions["train"])
    for split in ("dev", "test"):
        for q in world.questions[split]:
            assert q.metadata["entity"] not in train_text
    assert {q.metadata["hops"] for q in world.questions["test"]} == {1, 2}


def test_files_load_with_the_project_loaders(tiny_world):
    docs, _ = load_documents(str(tiny_world / "kb.jsonl"))
    paragraphs = [p for d in docs for p in d.text.split("\n\n")]
    for split in ("train", "dev", "test"):
        qs, report = load_questions(str(tiny_world / f"{split}.jsonl"))
        assert report.format == "generic" and qs
        for q in qs:  # every gold fact is stated verbatim by exactly one KB paragraph
            assert all(sum(contains_fact(p, f) for p in paragraphs) == 1 for f in q.facts)
            assert len(q.facts) == q.metadata["hops"] and len(set(q.options)) == len(q.options)


def _tokens(text):
    return [t for t in re.findall(r"\w+", text.lower()) if t not in {"a", "an", "the", "of", "in", "is", "was"}]


def test_question_only_bm25_is_clearly_weaker_than_rationale_bm25():
    """The world's purpose: the knowledge gap KARD's reranker closes must exist and be measurable."""
    world = generate_world(SynthConfig(seed=1))
    paragraphs = [p for d in world.documents for p in d["text"].split("\n\n")]
    bm25 = BM25Okapi([_tokens(p) for p in paragraphs])

    def recall_at_3(query, facts):
        top = np.argsort(-bm25.get_scores(_tokens(query)))[:3]
        return np.mean([any(contains_fact(paragraphs[i], f) for i in top) for f in facts])

    qs = world.questions["test"]
    by_question = np.mean([recall_at_3(q.question, q.facts) for q in qs])
    by_rationale = np.mean([recall_at_3(" ".join(q.facts), q.facts) for q in qs])
    assert by_rationale > 0.95
    assert by_question < by_rationale - 0.2


def test_write_world_creates_all_files(tmp_path):
    out = write_world(generate_world(TINY_WORLD), tmp_path / "w")
    assert sorted(p.name for p in out.iterdir()) == ["dev.jsonl", "kb.jsonl", "test.jsonl", "train.jsonl",
                                                     "world.json"]
