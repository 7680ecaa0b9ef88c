"""The ``kb`` stage: knowledge-base documents -> ``kb/passages.parquet`` (+ a memory-mappable Arrow copy)."""

from __future__ import annotations

from typing import Any

from kard_ray.artifacts import RunDir, StageResult, run_stage
from kard_ray.config import KardConfig
from kard_ray.stages import data as data_stage

STAGE = "kb"


def kb_sources(cfg: KardConfig, run: RunDir) -> tuple[list[str], list[str]]:
    """The KB paths and upstream stages: configured paths, or the synthetic world's kb.jsonl."""
    if cfg.kb.paths:
        return cfg.kb.paths, []
    if cfg.data.synth is not None:
        return [run.uri_of(data_stage.WORLD_DIR, "kb.jsonl")], [data_stage.STAGE]
    raise ValueError("kb.paths is empty and there is no synthetic world (data.synth) to take a KB from")


def run(cfg: KardConfig, run_dir: RunDir, force: bool = False, log=print) -> dict[str, Any]:
    from kard_ray.kb.ingest import chunk_with_ray
    from kard_ray.retrieval.passages import write_passage_store

    paths, upstream = kb_sources(cfg, run_dir)

    def body(run: RunDir) -> StageResult:
        import os
        import tempfile

        import ray

        blocks = max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
        table, counts = chunk_with_ray(paths, cfg.kb, blocks)
        run.write_table(f"{STAGE}/passages.parquet", table)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "passages.arrow")
            write_passage_store(table, local)
            with open(local, "rb") as f:
                run.write_bytes(f"{STAGE}/passages.arrow", f.read())
        examples = counts.pop("skipped_examples")
        return StageResult(counts=counts, extra={"skipped_examples": examples} if examples else {})

    inputs = {f"kb{i}": p for i, p in enumerate(paths)} if not upstream else {}
    return run_stage(run_dir, STAGE, body, config=[cfg.kb], inputs=inputs, upstream=upstream, force=force,
                     log=log)
