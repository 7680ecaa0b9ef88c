"""The stage registry: every pipeline stage declared once. This table is the map of the house.

A stage's *name* is its folder in the run directory, its `kard` command, its job name
(``python -m jobs <name>``) and its key in manifests. Each declaration says what the stage needs
(upstream stages, for the given config), which config sections go into its key, which files it
fingerprints, the outputs it writes (named paths, the only place artifact paths are spelled) and its
body (``module:function``, imported on use so that this table, ``kard --help`` and the job parser load
no torch or Ray).

The pipeline order, the CLI's stage commands (``kard <stage>``) and the job entrypoint
(``python -m jobs <stage>``) are all derived from ``STAGES``; stage bodies find each other's files through
:func:`output`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kard_ray.config import InferenceSettings, KardConfig

# Run-level files and folders that belong to no stage.
RESOLVED_CONFIG = "config.resolved.yaml"  # the config of the last command run on this directory
TRAIN_DIR = "train"  # training checkpoints, outside stage folders so a rerun resumes
TEACHER_CACHE = "cache/teacher"  # teacher responses, outside stage folders so nothing is billed twice
LOGS_DIR = "logs"  # library and Ray logs of `kard run` / `kard demo` (the console shows progress only)
STUDENT_METHODS = ("kard", "rd", "ft")
TRAINING_CURVE = {"history": "history.json", "loss_png": "loss.png"}  # every training stage writes them


def _none(_cfg: KardConfig) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Stage:
    name: str  # its run-dir folder, job name and manifest name
    summary: str  # one line for --help and docs
    body: str  # "module:function", called as fn(cfg, run, force=, log=, **params) -> StageResult
    needs: Callable[[KardConfig], Sequence[str]]
    key: Callable[[KardConfig], list[Any]]  # config parts hashed into the stage key
    outputs: Mapping[str, str]  # name -> path inside the stage folder ("" = the folder itself)
    inputs: Callable[[KardConfig], Mapping[str, str]] = _none  # files fingerprinted by content
    clean: bool = True  # False: a half-written folder is kept so the body resumes (caches, checkpoints)
    params: Mapping[str, Any] = field(default_factory=dict)

    def load_body(self):
        """The body function, imported now."""
        module, fn = self.body.split(":")
        return getattr(importlib.import_module(module), fn)


# --------------------------------------------------------------------------- the stages' needs and keys


def _kb_needs(cfg: KardConfig) -> list[str]:  # a synthetic world's KB and question facts come from the data stage
    return ["data"] if (cfg.data.synth is not None and not cfg.kb.paths) or cfg.kb.question_facts else []


def _kb_inputs(cfg: KardConfig) -> dict[str, str]:
    return {f"kb{i}": p for i, p in enumerate(cfg.kb.paths)}


def needs_dense(cfg: KardConfig) -> bool:
    """Whether the index stage builds a dense index too."""
    return (cfg.retrieval.dense.enabled or cfg.retrieval.method != "bm25"
            or cfg.reranker.first_stage in ("dense", "hybrid"))


def _augment_key(cfg: KardConfig) -> list[Any]:
    side = cfg.question_retriever()
    return [cfg.augment, cfg.teacher.filter_correct, side, cfg.retrieval if side != "bm25" else None]


def _teacher_key(cfg: KardConfig) -> list[Any]:
    return [cfg.teacher.model_dump(include={"source", "reference", "base_url", "model", "n", "temperature",
                                            "max_tokens", "give_gold_answer", "filter_correct", "system_prompt",
                                            "template", "fewshot", "splits", "import_path"})]


def _teacher_inputs(cfg: KardConfig) -> dict[str, str]:
    t = cfg.teacher
    return {name: p for name, p in (("template", t.template), ("fewshot", t.fewshot), ("import", t.import_path))
            if p}


def _student_key(method: str) -> Callable[[KardConfig], list[Any]]:
    def key(cfg: KardConfig) -> list[Any]:
        from kard_ray.student.formats import format_fingerprint

        return [cfg.student.key_settings({"workers", "method"}), method, format_fingerprint()]

    return key


STUDENT_OF = {"ft": "ft", "rd": "rd", "kard_bm25": "kard", "kard_reranker": "kard", "oracle": "kard"}


def student_stage(method: str) -> str:
    return f"student_{method}"


def _evaluate_needs(cfg: KardConfig) -> list[str]:
    methods = cfg.eval.methods
    needs = ["data", "index"]
    if "kard_reranker" in methods:
        needs.append("reranker")
    if "oracle" in methods:  # the oracle row uses the teacher's rationales for the test questions
        needs.append("rationales")
    return needs + list(dict.fromkeys(student_stage(STUDENT_OF[m]) for m in methods))


def _evaluate_key(cfg: KardConfig) -> list[Any]:
    first = cfg.reranker.first_stage
    return [cfg.eval, InferenceSettings.of(cfg), cfg.retrieval if first in ("dense", "hybrid") else None]


# --------------------------------------------------------------------------- the table

_STAGES: list[Stage] = [
    Stage("data", "Question sets (or a generated synthetic world) into normalised parquet.",
          "kard_ray.stages.data:build", needs=lambda c: [], key=lambda c: [c.data],
          inputs=lambda c: {} if c.data.synth is not None else c.data.split_paths(),
          outputs={"train": "train.parquet", "dev": "dev.parquet", "test": "test.parquet", "world": "world",
                   "world_kb": "world/kb.jsonl", "facts": "facts.jsonl"}),
    Stage("kb", "Knowledge-base documents chunked into passages on Ray Data.",
          "kard_ray.stages.kb:build", needs=_kb_needs, key=lambda c: [c.kb], inputs=_kb_inputs,
          outputs={"passages": "passages.parquet", "passages_arrow": "passages.arrow"}, clean=False),
    Stage("index", "BM25 (always) and dense FAISS (when used) indexes over the passages.",
          "kard_ray.stages.index:build", needs=lambda c: ["kb"],
          key=lambda c: [c.retrieval.bm25,  # how many actors or GPUs embed does not change a vector
                         c.retrieval.dense.key_settings({"actors", "use_gpu", "num_gpus"}) if needs_dense(c) else None],
          outputs={"bm25": "bm25", "dense": "dense"}, clean=False),
    Stage("rationales", "n chain-of-thought rationales per question from the teacher (cached, rate-limited).",
          "kard_ray.stages.rationales:build", needs=lambda c: ["data"], key=_teacher_key,
          inputs=_teacher_inputs,
          outputs={"rationales": "rationales.parquet", "failures": "failures.parquet",
                   "per_question": "per_question.parquet"}),
    Stage("augment", "Rationale-retrieved passages for the student; candidate sets for the reranker.",
          "kard_ray.stages.augment:build", needs=lambda c: ["data", "index", "rationales"],
          key=_augment_key,
          outputs={"student": "student.parquet", "reranker": "reranker.parquet"}),
    Stage("reranker", "The KARD reranker, KL-distilled on Ray Train (resumes from its last checkpoint).",
          "kard_ray.stages.reranker:build", needs=lambda c: ["augment"],
          key=lambda c: [c.reranker.key_settings({"eval_questions", "num_gpus"}), c.eval.recall_at],
          outputs={"model": "", "vectors": "index", "report_json": "report.json", "report_md": "report.md",
                   **TRAINING_CURVE}),
    *(Stage(student_stage(m), f"The {m} student on Ray Train (resumes from its last checkpoint).",
            "kard_ray.stages.student:build", needs=lambda c: ["augment"], key=_student_key(m),
            outputs={"model": "", **TRAINING_CURVE}, params={"method": m}) for m in STUDENT_METHODS),
    Stage("evaluate", "Every method on the same test questions: predictions, report, charts.",
          "kard_ray.stages.evaluate:build", needs=_evaluate_needs, key=_evaluate_key,
          outputs={"predictions": "predictions.parquet", "report_json": "report.json", "report_md": "report.md",
                   "accuracy_png": "accuracy.png", "recall_png": "recall.png",
                   "config": RESOLVED_CONFIG}),
]
STAGES: dict[str, Stage] = {s.name: s for s in _STAGES}


def checkpoints_to_discard(keep: bool, storage_name: str) -> list[str]:
    """A finished training's checkpoint folder under ``train/``, for ``StageResult.scratch``, unless the run keeps
    it: model plus optimizer state, ``num_to_keep`` times, useless once the model is exported (they doubled a
    run's disk use)."""
    return [] if keep else [f"{TRAIN_DIR}/{storage_name}"]


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None


def output(stage_name: str, name: str) -> str:
    """The run-relative path of a stage's named output, e.g. ``output("kb", "passages_arrow")``."""
    outputs = stage(stage_name).outputs
    if name not in outputs:
        raise KeyError(f"stage {stage_name!r} has no output {name!r}; it writes {', '.join(outputs)}")
    return "/".join(p for p in (stage_name, outputs[name]) if p)


def plan(cfg: KardConfig, targets: Sequence[str] = ("evaluate",)) -> list[str]:
    """The stages ``targets`` need under ``cfg``, themselves included, in registry (= dependency) order."""
    wanted: set[str] = set()
    todo = [stage(t).name for t in targets]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(stage(name).needs(cfg))
    return [name for name in STAGES if name in wanted]


# Earlier `kard` command names, kept as hidden aliases: old name -> the stages it runs.
OLD_COMMANDS = {"prepare": ["data"], "kb build": ["kb", "index"], "train-reranker": ["reranker"]}
