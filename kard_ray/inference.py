"""What the evaluation stage and the Serve endpoint share, so that the endpoint serves what was evaluated:
the reranker with its stored vectors and the question-side query."""

from __future__ import annotations

from collections.abc import Sequence

from kard_ray.config import InferenceSettings
from kard_ray.fs import local_copy
from kard_ray.reranker.model import Reranker, query_text
from kard_ray.reranker.vectors import load_passage_vectors


def load_trained_reranker(model_uri: str, vectors_uri: str, s: InferenceSettings, use_vectors: bool = True):
    """A trained reranker with its stored passage vectors (bi-encoders; ``use_vectors=False`` encodes every
    candidate instead, the path before vectors existed), local copies if remote."""
    vectors = None
    if use_vectors:
        try:
            vectors = load_passage_vectors(local_copy(vectors_uri))
        except FileNotFoundError:  # a cross-encoder, or a bi-encoder trained before vectors existed
            pass
    return Reranker(local_copy(model_uri), s.reranker_max_length, vectors=vectors)


def question_query(s: InferenceSettings, question: str, options: Sequence[str]) -> str:
    """The query the first stage and the reranker see for a question (the same text as in training)."""
    return query_text(question, list(options), s.query_with_options)
