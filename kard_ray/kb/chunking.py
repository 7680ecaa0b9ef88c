"""Chunking strategies: pure functions from one document's text to passage texts.

Guarantees (tested): with no overlap, the words of the chunks, concatenated, are exactly the
words of the document; with overlap, dropping each chunk's overlapping prefix gives the same.
No chunk is longer than ``max_chars`` unless a single word is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from kard_ray.config import ChunkingConfig

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# End of a sentence: . ! ? (optionally closing quote/bracket) followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    """Sentences of whitespace-normalised text; the words of the result are the words of the input."""
    text = normalize_whitespace(text)
    if not text:
        return []
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.end()].strip())
        start = m.end()
    if start < len(text):
        out.append(text[start:].strip())
    return [s for s in out if s]


def _windows(items: list[str], size: int, overlap: int) -> Iterator[list[str]]:
    if not items:
        return
    stride = size - overlap
    start = 0
    while True:
        yield items[start : start + size]
        if start + size >= len(items):
            return
        start += stride


def cap_length(text: str, max_chars: int) -> list[str]:
    """Split a too-long passage at sentence, then word, boundaries into pieces of at most max_chars."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for unit in split_sentences(text):
        words = [unit] if len(unit) <= max_chars else unit.split(" ")
        for w in words:
            if not current:
                current = w
            elif len(current) + 1 + len(w) <= max_chars:
                current += " " + w
            else:
                pieces.append(current)
                current = w
    if current:
        pieces.append(current)
    return pieces


def chunk_text(text: str, cfg: ChunkingConfig) -> list[str]:
    """Passages of one document under the configured strategy, whitespace-normalised and non-empty."""
    if cfg.strategy == "paragraph":
        parts = [normalize_whitespace(p) for p in _PARAGRAPH_BREAK.split(text)]
    elif cfg.strategy == "sentences":
        sents = split_sentences(text)
        parts = [" ".join(w) for w in _windows(sents, cfg.sentences_per_chunk, cfg.sentence_overlap)]
    elif cfg.strategy == "tokens":
        words = text.split()
        parts = [" ".join(w) for w in _windows(words, cfg.tokens_per_chunk, cfg.token_overlap)]
    else:  # pragma: no cover - the config's Literal forbids it
        raise ValueError(f"unknown chunking strategy {cfg.strategy!r}")
    out: list[str] = []
    for p in parts:
        if p:
            out.extend(c for c in cap_length(p, cfg.max_chars) if len(c) >= cfg.min_chars)
    return out
