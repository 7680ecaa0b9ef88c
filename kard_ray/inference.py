"""What the evaluation stage and the Serve endpoint share, so that the endpoint serves what was evaluated:
the run's resolved settings, the reranker with its stored vectors and the question-side query."""

from __future__ import annotations

from collections.abc import Sequence

from kard_ray.config import InferenceSettings, KardConfig


def run_config(run) -> KardConfig:
    """The config a run was evaluated with (``evaluate/config.resolved.yaml``), else the run's last one."""
    import yaml

    from kard_ray.registry import RESOLVED_CONFIG, output

    for rel in (output("evaluate", "config"), RESOLVED_CONFIG):
        if run.exists(rel):
            return KardConfig.model_validate(yaml.safe_load(run.read_bytes(rel)))
    raise FileNotFoundError(f"{run.uri} has no {RESOLVED_CONFIG}; is it a kard run directory?")


def open_reranker(run_uri: str, s: InferenceSettings, use_vectors: bool = True):
    """The run's trained reranker with its stored passage vectors (bi-encoders; ``use_vectors=False`` encodes
    every candidate instead, the path before vectors existed), local copies if remote."""
    from kard_ray.artifacts import local_copy
    from kard_ray.registry import output
    from kard_ray.reranker.model import Reranker
    from kard_ray.reranker.vectors import load_passage_vectors

    base = run_uri.rstrip("/")
    model_dir = local_copy(f"{base}/{output('reranker', 'model')}")
    vectors = None
    if use_vectors:
        try:
            vectors = load_passage_vectors(local_copy(f"{base}/{output('reranker', 'vectors')}"))
        except FileNotFoundError:  # a cross-encoder, or a bi-encoder trained before vectors existed
            pass
    return Reranker(model_dir, s.reranker_max_length, vectors=vectors)


def question_query(s: InferenceSettings, question: str, options: Sequence[str]) -> str:
    """The query the first stage and the reranker see for a question (the same text as in training)."""
    from kard_ray.reranker.model import query_text

    return query_text(question, list(options), s.query_with_options)
