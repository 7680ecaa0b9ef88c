"""Check a whole plan before its first stage runs: a run that cannot finish is refused before anything is
paid for (teacher calls, GPU hours).

Every refusal names the config key to change. The checks read configs and file listings only: no Ray, no
models, nothing written, so ``kard run --check`` is free and fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs

from kard_ray.artifacts import RunDir
from kard_ray.config import ConfigError, KardConfig
from kard_ray.fs import resolve_fs
from kard_ray.models import model_name_problem
from kard_ray.registry import plan


@dataclass(frozen=True)
class Refusal:
    key: str  # the config key to change
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


class PlanRefused(ConfigError):
    """The plan cannot finish; every reason is in the message."""

    def __init__(self, refusals: Sequence[Refusal]):
        self.refusals = list(refusals)
        super().__init__("the plan cannot finish, nothing was run:\n" + "\n".join(f"  {r}" for r in refusals))


def available_splits(cfg: KardConfig) -> set[str]:
    """The question splits the data stage will write under ``cfg``."""
    d = cfg.data
    if d.synth is not None:
        return {"train", "dev", "test"}
    splits = set(d.split_paths())
    if d.holdout and "train" in splits:
        splits.add("test")
    return splits


def _split_refusals(cfg: KardConfig, stages: list[str]) -> list[Refusal]:
    have = available_splits(cfg)
    fix = "set data.test to a question file, or data.holdout to hold out N train questions"
    out = []
    if "augment" in stages and "train" not in have:
        out.append(Refusal("data.train", "the augment and training stages read the train split, and none is given"))
    if "rationales" in stages:
        out += [Refusal("teacher.splits", f"asks for the {split} split, which no data.{split} file makes"
                                          + (f" ({fix})" if split == "test" else ""))
                for split in cfg.teacher.splits if split not in have]
    if ("evaluate" in stages or "reranker" in stages) and cfg.eval.split not in have:
        out.append(Refusal("eval.split", f"the evaluation reads the {cfg.eval.split} split, which no data file or "
                                         f"holdout makes: {fix if cfg.eval.split == 'test' else 'set data.dev'}"))
    return out


def _is_remote(uri: str) -> bool:
    return "://" in uri


def _exists(uri: str) -> bool | str:
    """True, False, or the error that stopped the look (no credentials, no such bucket)."""
    try:
        fs, path = resolve_fs(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except (OSError, ValueError) as exc:
        return f"cannot be read ({exc})"


def _input_refusals(cfg: KardConfig, stages: list[str]) -> list[Refusal]:
    inputs: list[tuple[str, str]] = []
    if "data" in stages and cfg.data.synth is None:
        inputs += [(f"data.{split}", p) for split, p in cfg.data.split_paths().items()]
    if "kb" in stages:
        inputs += [(f"kb.paths[{i}]", p) for i, p in enumerate(cfg.kb.paths)]
    if "rationales" in stages:
        t = cfg.teacher
        inputs += [(f"teacher.{k}", p) for k, p in (("template", t.template), ("fewshot", t.fewshot),
                                                     ("import_path", t.import_path)) if p]
    out = []
    for key, uri in inputs:
        found = _exists(uri)
        if found is not True:
            out.append(Refusal(key, f"{uri} {found if isinstance(found, str) else 'does not exist'}"))
    return out


def _teacher_refusals(cfg: KardConfig, stages: list[str]) -> list[Refusal]:
    """The hosted API (no ``teacher.base_url``) needs its key; a self-hosted endpoint may need none."""
    t = cfg.teacher
    if "rationales" not in stages or t.source != "api" or t.reference or t.base_url or os.environ.get(t.api_key_env):
        return []
    run = existing_run(cfg.run_dir)
    if run is not None and _up_to_date(cfg, run, "rationales"):
        return []  # every rationale is already paid for and stored: nothing will call the teacher
    return [Refusal("teacher.api_key_env", f"the teacher will be called, but the environment variable "
                                           f"{t.api_key_env} is not set (export it, or from a cluster Secret)")]


def _up_to_date(cfg: KardConfig, run: RunDir, name: str) -> bool:
    from kard_ray.pipeline import current_key

    m = run.manifest(name)
    return m is not None and m.get("key") == current_key(cfg, run, name)


def _cluster_refusals(cfg: KardConfig, stages: list[str], nodes: int) -> list[Refusal]:
    if nodes <= 1:
        return []
    why = (f"is a path on this node, and the cluster has {nodes} nodes that share no disk: use a URI on shared "
           "storage (s3://bucket/...), or file:///path for a filesystem mounted at the same path on every node")
    out = []
    if not _is_remote(cfg.run_dir):
        out.append(Refusal("run_dir", f"{cfg.run_dir} {why}"))
    if "kb" in stages:  # read file by file by Ray Data tasks on any node
        out += [Refusal(f"kb.paths[{i}]", f"{p} {why}") for i, p in enumerate(cfg.kb.paths) if not _is_remote(p)]
    # models load on Train workers and actors: a folder here is not on their nodes (a hub id or a URI is)
    out += [Refusal(key, f"{name} {why}") for key, name, _ in _models(cfg, stages)
            if not _is_remote(name) and os.path.exists(os.path.expanduser(name))]
    return out


def _models(cfg: KardConfig, stages: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(config key, model name, the aliases it may also take) of every model the planned stages load."""
    from kard_ray.registry import needs_dense
    from kard_ray.student.model import TINY_T5

    models = []
    if "reranker" in stages:
        models.append(("reranker.model", cfg.reranker.model, ()))
    if any(s.startswith("student_") for s in stages):
        models.append(("student.model", cfg.student.model, (TINY_T5,) if cfg.student.family == "seq2seq" else ()))
    if "index" in stages and needs_dense(cfg):
        models.append(("retrieval.dense.encoder", cfg.retrieval.dense.encoder, ()))
    return models


def _model_refusals(cfg: KardConfig, stages: list[str]) -> list[Refusal]:
    return [Refusal(key, problem) for key, name, extra in _models(cfg, stages)
            if (problem := model_name_problem(name, extra)) is not None]


def existing_run(uri: str) -> RunDir | None:
    """The run directory if it exists, without creating it (a check writes nothing)."""
    try:
        fs, path = resolve_fs(uri)
        exists = fs.get_file_info(path).type == pafs.FileType.Directory
    except OSError:  # unreachable now: the stages will say so; here it only means nothing is stored yet
        return None
    return RunDir(uri) if exists else None


def _tracking_refusals(cfg: KardConfig) -> list[Refusal]:
    t = cfg.tracking
    if t.backend == "mlflow" and not t.uri and _is_remote(cfg.run_dir) and not cfg.run_dir.startswith("file://"):
        return [Refusal("tracking.uri", f"the default store is a database in the run directory, and {cfg.run_dir} "
                                        "is remote: point tracking.uri at a tracking server (http://host:5000)")]
    return []


def refusals(cfg: KardConfig, targets: Sequence[str] = ("evaluate",), nodes: int = 1) -> list[Refusal]:
    """Every reason the stages ``targets`` need cannot finish under ``cfg`` on a cluster of ``nodes`` nodes."""
    stages = plan(cfg, targets)
    return [*_split_refusals(cfg, stages), *_input_refusals(cfg, stages), *_cluster_refusals(cfg, stages, nodes),
            *_model_refusals(cfg, stages), *_teacher_refusals(cfg, stages), *_tracking_refusals(cfg)]


def check_plan(cfg: KardConfig, targets: Sequence[str] = ("evaluate",), nodes: int = 1) -> list[str]:
    """The planned stages, or :class:`PlanRefused` with every reason the plan cannot finish."""
    found = refusals(cfg, targets, nodes)
    if found:
        raise PlanRefused(found)
    return plan(cfg, targets)
