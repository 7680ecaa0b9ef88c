"""The ``data`` stage: question sets (from files, or a generated synthetic world) into normalised parquet.

Writes ``data/{train,dev,test}.parquet`` in the one question schema, and for a synthetic world
also ``data/world/`` (its KB, question files and ground truth for the reference teacher). Later
stages read questions from here, never from the original files, so every stage of a run sees
the same questions.
"""

from __future__ import annotations

from kard_ray.artifacts import RunDir, StageResult
from kard_ray.config import KardConfig
from kard_ray.data.questions import load_questions
from kard_ray.data.schema import Question, questions_from_table, questions_to_table
from kard_ray.registry import output
from kard_ray.synth.world import generate_world, world_files


def build(cfg: KardConfig, run: RunDir, *, force: bool = False, log=print) -> StageResult:
    data = cfg.data
    paths = data.split_paths()
    if data.synth is None and not paths:
        raise ValueError("data: set data.synth (a synthetic world) or at least one of data.train/dev/test")
    result = StageResult()
    splits: dict[str, list[Question]] = {}
    if data.synth is not None:
        world = generate_world(data.synth)
        for name, blob in world_files(world).items():
            run.write_bytes(f"{output('data', 'world')}/{name}", blob)
        splits = world.questions
        result.counts["kb_documents"] = len(world.documents)
        result.extra["world"] = run.uri_of(output("data", "world"))
    else:
        for split, path in paths.items():
            qs, report = load_questions(path, data.format, data.on_malformed)
            splits[split] = qs
            result.counts[f"{split}_skipped"] = report.skipped
            result.extra[f"{split}_read"] = report.as_dict()
    for split, qs in splits.items():
        qs = qs[: data.limit] if data.limit else qs
        run.write_table(output("data", split), questions_to_table(qs))
        result.counts[split] = len(qs)
    return result


def read_split(run_dir: RunDir, split: str) -> list[Question]:
    """The questions of one split as the data stage wrote them."""
    if not run_dir.exists(output("data", split)):
        raise FileNotFoundError(f"split {split!r} not found in {run_dir.uri}/data; run the data stage first")
    return questions_from_table(run_dir.read_table(output("data", split)))
