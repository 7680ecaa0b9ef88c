import random

import pytest

from kard_ray.config import ChunkingConfig
from kard_ray.kb.chunking import cap_length, chunk_text, split_sentences

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def random_doc(rng: random.Random, paragraphs: int = 5) -> str:
    paras = []
    for _ in range(paragraphs):
        sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))).capitalize() + rng.choice(".!?")
                 for _ in range(rng.randint(1, 6))]
        paras.append("  ".join(sents).replace("  ", rng.choice([" ", "\n", "\t "])))
    return "\n\n".join(paras)


def _words(texts):
    return [w for t in texts for w in t.split()]


@pytest.mark.parametrize("strategy", ["paragraph", "sentences", "tokens"])
def test_no_text_lost_or_duplicated_without_overlap(strategy):
    rng = random.Random(0)
    cfg = ChunkingConfig(strategy=strategy, sentences_per_chunk=2, sentence_overlap=0, tokens_per_chunk=9,
                         token_overlap=0, max_chars=80)
    for _ in range(50):
        doc = random_doc(rng)
        chunks = chunk_text(doc, cfg)
        assert _words(chunks) == doc.split()
        assert all(len(c) <= 80 for c in chunks)


def test_overlap_repeats_exactly_the_overlap():
    rng = random.Random(1)
    cfg = ChunkingConfig(strategy="tokens", tokens_per_chunk=10, token_overlap=3, max_chars=10_000)
    for _ in range(30):
        doc = random_doc(rng)
        chunks = chunk_text(doc, cfg)
        rebuilt = chunks[0].split() + [w for c in chunks[1:] for w in c.split()[3:]]
        assert rebuilt == doc.split()
    scfg = ChunkingConfig(strategy="sentences", sentences_per_chunk=3, sentence_overlap=1, max_chars=10_000)
    doc = "One. Two. Three. Four. Five. Six."
    assert chunk_text(doc, scfg) == ["One. Two. Three.", "Three. Four. Five.", "Five. Six."]


def test_paragraphs_and_whitespace():
    cfg = ChunkingConfig(strategy="paragraph")
    assert chunk_text("  First   para\nstill first.\n\n\n  Second.  \n \n", cfg) == ["First para still first.",
                                                                                     "Second."]
    assert chunk_text("   \n\n  ", cfg) == []


def test_huge_single_document_is_capped():
    text = ("word " * 2_000_000).strip()  # ~10 MB, no sentence or paragraph breaks
    cfg = ChunkingConfig(strategy="paragraph", max_chars=4000)
    chunks = chunk_text(text, cfg)
    assert all(len(c) <= 4000 for c in chunks) and sum(len(c.split()) for c in chunks) == 2_000_000


def test_sentence_split_keeps_words():
    text = 'He said "stop." Then left! Did he? Yes (really.) done'
    assert _words(split_sentences(text)) == text.split()
    assert cap_length("a" * 10, 4) == ["a" * 10]  # a single word longer than the cap stays whole
