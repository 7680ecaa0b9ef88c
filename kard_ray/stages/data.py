"""The ``data`` stage: question sets (from files, or a generated synthetic world) into normalised parquet.

Writes ``data/{train,dev,test}.parquet`` in the one question schema, and for a synthetic world
also ``data/world/`` (its KB, question files and ground truth for the reference teacher). Later
stages read questions from here, never from the original files, so every stage of a run sees
the same questions.
"""

from __future__ import annotations

from typing import Any

from kard_ray.artifacts import RunDir, StageResult, run_stage
from kard_ray.config import KardConfig
from kard_ray.data.questions import load_questions
from kard_ray.data.schema import Question, questions_from_table, questions_to_table
from kard_ray.synth.world import SPLITS, generate_world, world_files

STAGE = "data"
WORLD_DIR = f"{STAGE}/world"


def _split_paths(cfg: KardConfig) -> dict[str, str]:
    return {s: p for s in SPLITS if (p := getattr(cfg.data, s))}


def run(cfg: KardConfig, run_dir: RunDir, force: bool = False, log=print) -> dict[str, Any]:
    data = cfg.data
    paths = _split_paths(cfg)
    if data.synth is None and not paths:
        raise ValueError("data: set data.synth (a synthetic world) or at least one of data.train/dev/test")

    def body(run: RunDir) -> StageResult:
        result = StageResult()
        splits: dict[str, list[Question]] = {}
        if data.synth is not None:
            world = generate_world(data.synth)
            for name, blob in world_files(world).items():
                run.write_bytes(f"{WORLD_DIR}/{name}", blob)
            splits = world.questions
            result.counts["kb_documents"] = len(world.documents)
            result.extra["world"] = run.uri_of(WORLD_DIR)
        else:
            for split, path in paths.items():
                qs, report = load_questions(path, data.format, data.on_malformed)
                splits[split] = qs
                result.counts[f"{split}_skipped"] = report.skipped
                result.extra[f"{split}_read"] = report.as_dict()
        for split, qs in splits.items():
            qs = qs[: data.limit] if data.limit else qs
            run.write_table(f"{STAGE}/{split}.parquet", questions_to_table(qs))
            result.counts[split] = len(qs)
        return result

    return run_stage(
        run_dir,
        STAGE,
        body,
        config=[data],
        inputs=paths if data.synth is None else {},
        force=force,
        log=log,
    )


def read_split(run_dir: RunDir, split: str) -> list[Question]:
    """The questions of one split as the data stage wrote them."""
    if not run_dir.exists(f"{STAGE}/{split}.parquet"):
        raise FileNotFoundError(f"split {split!r} not found in {run_dir.uri}/{STAGE}; run the data stage first")
    return questions_from_table(run_dir.read_table(f"{STAGE}/{split}.parquet"))
