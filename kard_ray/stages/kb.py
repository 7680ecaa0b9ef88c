"""The ``kb`` stage: knowledge-base documents -> ``kb/passages.parquet/`` parts + ``kb/passages.arrow/`` shards.

Streamed through Ray (``kard_ray.kb.ingest``): resumable, since the stage keeps its half-written folder
(``clean=False``) and every pass skips what it finished before a kill.
"""

from __future__ import annotations

from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import KardConfig
from kard_ray.kb.ingest import build_passages
from kard_ray.registry import output

STAGING = "kb/_staging"


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
    counts = build_passages(kb_sources(cfg, run), cfg.kb, run.uri_of(STAGING), run.uri_of(output("kb", "passages")),
                            run.uri_of(output("kb", "passages_arrow")))
    run.delete(STAGING)
    examples = counts.pop("skipped_examples")
    return StageResult(counts=counts, extra={"skipped_examples": examples} if examples else {})
