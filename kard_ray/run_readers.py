"""A run directory's artifacts read back by name: its config, passages, indexes and trained reranker. The
stages, Serve and the CLI open a run through these; the libraries below take the paths or URIs they name.
Remote artifacts are downloaded on the node that opens them."""

from __future__ import annotations

from kard_ray.artifacts import RunDir
from kard_ray.config import InferenceSettings, KardConfig, RetrievalConfig
from kard_ray.fs import local_copy
from kard_ray.inference import load_trained_reranker
from kard_ray.registry import RESOLVED_CONFIG, output
from kard_ray.retrieval.open import IndexUris, Retriever, open_index
from kard_ray.retrieval.passages import PassageStore


def run_config(run: RunDir) -> KardConfig:
    """The config a run was evaluated with (``evaluate/config.resolved.yaml``), else the run's last one."""
    import yaml

    for rel in (output("evaluate", "config"), RESOLVED_CONFIG):
        if run.exists(rel):
            return KardConfig.model_validate(yaml.safe_load(run.read_bytes(rel)))
    raise FileNotFoundError(f"{run.uri} has no {RESOLVED_CONFIG}; is it a kard run directory?")


def _at(run_uri: str, stage: str, name: str) -> str:
    return f"{run_uri.rstrip('/')}/{output(stage, name)}"


def index_uris(run_uri: str) -> IndexUris:
    return IndexUris(bm25=_at(run_uri, "index", "bm25"), dense=_at(run_uri, "index", "dense"),
                     encoder=_at(run_uri, "reranker", "model"), encoder_vectors=_at(run_uri, "reranker", "vectors"))


def open_retriever(run_uri: str, cfg: RetrievalConfig, method: str | None = None) -> Retriever:
    """The run's BM25 / dense / hybrid index, or its trained bi-encoder (``reranker``)."""
    return open_index(index_uris(run_uri), cfg, method)


def passages_uri(run_uri: str) -> str:
    return _at(run_uri, "kb", "passages_arrow")


def open_passages(run_uri: str) -> PassageStore:
    return PassageStore(local_copy(passages_uri(run_uri)))


def open_reranker(run_uri: str, s: InferenceSettings, use_vectors: bool = True):
    """The run's trained reranker with its stored passage vectors (bi-encoders)."""
    return load_trained_reranker(_at(run_uri, "reranker", "model"), _at(run_uri, "reranker", "vectors"), s, use_vectors)
