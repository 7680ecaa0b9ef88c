"""The ``kb`` stage: knowledge-base documents -> ``kb/passages.parquet`` (+ a memory-mappable Arrow copy)."""

from __future__ import annotations

from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import KardConfig
from kard_ray.registry import output


def kb_sources(cfg: KardConfig, run: RunDir) -> list[str]:
    """The KB paths: configured paths, plus the question files' annotated facts (``kb.question_facts``),
    or the synthetic world's kb.jsonl."""
    facts = [run.uri_of(output("data", "facts"))] if cfg.kb.question_facts else []
    if facts and not run.read_bytes(output("data", "facts")).strip():
        raise ValueError("kb.question_facts is set, but the question files carry no annotated facts")
    if cfg.kb.paths or facts:
        return [*cfg.kb.paths, *facts]
    if cfg.data.synth is not None:
        return [run.uri_of(output("data", "world_kb"))]
    raise ValueError("kb.paths is empty and there is no synthetic world (data.synth) to take a KB from")


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    import os
    import tempfile

    import ray

    from kard_ray.kb.ingest import chunk_with_ray
    from kard_ray.retrieval.passages import write_passage_store

    blocks = max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
    table, counts = chunk_with_ray(kb_sources(cfg, run), cfg.kb, blocks)
    run.write_table(output("kb", "passages"), table)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "passages.arrow")
        write_passage_store(table, local)
        with open(local, "rb") as f:
            run.write_bytes(output("kb", "passages_arrow"), f.read())
    examples = counts.pop("skipped_examples")
    return StageResult(counts=counts, extra={"skipped_examples": examples} if examples else {})
