"""Experiment tracking in MLflow: where ML engineers compare runs.

One MLflow run per pipeline invocation that did work, with a nested run per stage that ran (its config
section as params; every number of its manifest and report as metrics; its training curve step by step; its
report, plots and manifest as artifacts; a trained model's ``save_pretrained`` folder under ``model/``).
Stages found up to date are named in the parent's ``kard.skipped`` tag, not logged again, so a rerun of a
finished run logs nothing. The parent run is opened at the first stage that did work.

Tracking never changes what a run computes: it is in no stage key, it is called after a stage's manifest has
landed, and a failing tracking store costs a warning in the run's log, not the run. The seconds spent here are
written into each stage's manifest (``tracking.seconds``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kard_ray.artifacts import MANIFEST, RunDir
from kard_ray.config import KardConfig, config_hash
from kard_ray.registry import RESOLVED_CONFIG, stage

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"  # in the run directory when tracking.uri is not set
DEFAULT_ARTIFACTS = "mlartifacts"
_SMALL_FILES = (".md", ".png", ".json", ".yaml")  # a stage's report, plots and manifest
_METRICS_PER_CALL, _PARAMS_PER_CALL = 1000, 100  # MLflow's limits per log_batch call


def default_uri(run: RunDir) -> str:
    return f"sqlite:///{run.path(DEFAULT_DB)}"


def tracking_uri(cfg: KardConfig, run: RunDir) -> str | None:
    """Where this run logs; None when the default (a database in the run directory) cannot hold it."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    return default_uri(run) if run.is_local else None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts, lists and config sections as ``a.b.c`` leaves."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return {k: v for i, v in enumerate(obj) for k, v in flatten(v, f"{prefix}.{i}").items()}
    return {prefix: obj}


def metric_name(key: str) -> str:
    """MLflow accepts letters, digits, ``_ - . /`` and spaces in names: ``recall@3`` becomes ``recall_at_3``."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key.replace("@", "_at_"))


def numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of ``obj`` (booleans and NaN left out) under MLflow-safe names."""
    return {metric_name(k): float(v) for k, v in flatten(obj, prefix).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, text=True,
                              capture_output=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine() -> str:
    return f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, {platform.system()})"


def _import_mlflow():
    """The MLflow client, quiet on the console (its loggers go where the run's library logs go)."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient


class Tracker:
    """Logs one pipeline invocation's stages to MLflow (see the module docstring)."""

    def __init__(self, client, cfg: KardConfig, run: RunDir, artifact_root: str | None):
        self.client, self.cfg, self.run = client, cfg, run
        self.artifact_root = artifact_root
        self.parent: str | None = None
        self.skipped: list[str] = []
        self.seconds = 0.0  # in tracking calls so far, opening the store included
        self._unbooked = 0.0  # opening the store: booked to the first stage logged

    @classmethod
    def open(cls, cfg: KardConfig, run: RunDir) -> Tracker | None:
        """A tracker when tracking is on and MLflow is installed; None (nothing is logged) otherwise."""
        if cfg.tracking.backend == "off":
            return None
        t0 = time.perf_counter()
        uri = tracking_uri(cfg, run)
        if uri is None:
            raise ValueError(f"tracking.backend mlflow: the run directory {run.uri} is remote, so the default "
                             "store in it cannot be used; set tracking.uri to a tracking server")
        try:
            client_cls = _import_mlflow()
        except ImportError:
            log.warning("tracking.backend is mlflow but mlflow is not installed (pip install 'kard-ray[tracking]'); "
                        "nothing is logged")
            return None
        artifacts = None if cfg.tracking.uri else Path(run.path(DEFAULT_ARTIFACTS)).as_uri()
        tracker = cls(client_cls(uri), cfg, run, artifacts)
        tracker._unbooked = tracker.seconds = time.perf_counter() - t0
        return tracker

    # ---- the parent run
    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.cfg.tracking.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.cfg.tracking.experiment, artifact_location=self.artifact_root)

    def _parent(self) -> str:
        if self.parent is None:
            tags = {"kard.commit": _commit(), "kard.config_hash": config_hash(self.cfg)[:12],
                    "kard.machine": _machine(), "kard.run_dir": self.run.uri}
            self.experiment = self._experiment()
            self.parent = self.client.create_run(self.experiment, run_name=Path(self.run.root).name,
                                                 tags=tags).info.run_id
            if self.run.exists(RESOLVED_CONFIG):
                self.client.log_text(self.parent, self.run.read_bytes(RESOLVED_CONFIG).decode(), RESOLVED_CONFIG)
        return self.parent

    def finish(self, failed: bool = False) -> None:
        """Close the parent run (if any stage did work): FINISHED, or FAILED when a stage raised."""
        if self.parent is None:
            return
        try:
            if self.skipped:
                self.client.set_tag(self.parent, "kard.skipped", ",".join(self.skipped))
            self.client.set_terminated(self.parent, "FAILED" if failed else "FINISHED")
        except Exception as exc:  # the run's results stand without their tracking
            log.warning("tracking: closing the MLflow run failed: %s", exc)

    # ---- one stage
    def stage_done(self, name: str, manifest: dict[str, Any]) -> None:
        """Log a finished stage (or note a skipped one); its manifest then records the tracking run and seconds."""
        if manifest.get("up_to_date"):
            self.skipped.append(name)
            return
        t0 = time.perf_counter()
        try:
            run_id = self._log_stage(name, manifest)
        except Exception as exc:
            log.warning("tracking: logging stage %s failed: %s", name, exc)
            return
        seconds = time.perf_counter() - t0 + self._unbooked
        self.seconds += seconds - self._unbooked
        self._unbooked = 0.0
        self.run.write_json(f"{name}/{MANIFEST}", {**manifest, "tracking": {"run_id": run_id,
                                                                            "seconds": round(seconds, 3)}})

    def _log_stage(self, name: str, manifest: dict[str, Any]) -> str:
        from mlflow.entities import Metric, Param

        s = stage(name)
        child = self.client.create_run(self._experiment_id(), run_name=name, tags={
            "mlflow.parentRunId": self._parent(), "kard.stage": name, "kard.key": manifest["key"]}).info.run_id
        params = {k: v for i, part in enumerate(s.key(self.cfg)) if part is not None
                  for k, v in flatten(part, "" if isinstance(part, BaseModel | dict) else f"key{i}").items()}
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in {
            **numbers(manifest.get("counts", {}), "counts"), **numbers(manifest.get("extra", {})),
            "duration_s": float(manifest.get("duration_s", 0.0)), **self._report_numbers(name)}.items()]
        metrics += self._curve(name)
        for i in range(0, len(metrics), _METRICS_PER_CALL):
            self.client.log_batch(child, metrics=metrics[i: i + _METRICS_PER_CALL])
        values = [Param(metric_name(k), json.dumps(v) if isinstance(v, list | dict) else str(v)[:500])
                  for k, v in params.items()]
        for i in range(0, len(values), _PARAMS_PER_CALL):
            self.client.log_batch(child, params=values[i: i + _PARAMS_PER_CALL])
        self.client.log_dict(child, manifest, MANIFEST)
        with self._local(name, self._small_files(name)) as files:
            for rel, path in files:
                self.client.log_artifact(child, path, os.path.dirname(rel) or None)
        if "model" in s.outputs and self.cfg.tracking.log_models:
            with self._local(name, self._model_files(name)) as files:
                for rel, path in files:
                    self.client.log_artifact(child, path, "/".join(["model", *rel.split("/")[:-1]]))
        self.client.set_terminated(child, "FINISHED")
        return child

    def _experiment_id(self) -> str:
        self._parent()
        return self.experiment

    def _report_numbers(self, name: str) -> dict[str, float]:
        """Every number of the stage's report (accuracies with their CI bounds, error classes, recall@k)."""
        rel = stage(name).outputs.get("report_json")
        if not rel or not self.run.exists(name, rel):
            return {}
        return numbers(self.run.read_json(f"{name}/{rel}"))

    def _curve(self, name: str) -> list:
        """The training history (rank 0's loss, learning rate and tokens/s per optimizer step)."""
        from mlflow.entities import Metric

        rel = stage(name).outputs.get("history")
        if not rel or not self.run.exists(name, rel):
            return []
        return [Metric(f"train/{k}", float(row[k]), int(row["time"] * 1000), int(row["step"]))
                for row in self.run.read_json(f"{name}/{rel}") for k in ("loss", "lr", "tokens_per_s")]

    def _stage_files(self, name: str) -> list[str]:
        return [o["path"] for o in self.run.list_outputs(name)]

    def _small_files(self, name: str) -> list[str]:
        """The stage's own report, plots and records: not model weights, tokenizers or tables."""
        model_files = set(self._model_files(name)) if "model" in stage(name).outputs else set()
        return [p for p in self._stage_files(name) if p.endswith(_SMALL_FILES) and p not in model_files]

    def _model_files(self, name: str) -> list[str]:
        """The ``save_pretrained`` folder's files: the stage folder less the stage's other declared outputs."""
        others = [rel for key, rel in stage(name).outputs.items() if key != "model" and rel]
        return [p for p in self._stage_files(name)
                if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in others)]

    @contextmanager
    def _local(self, name: str, rels: list[str]) -> Iterator[list[tuple[str, str]]]:
        """(stage-relative path, local file) pairs; files of a remote run directory are fetched first."""
        if self.run.is_local:
            yield [(rel, self.run.path(name, rel)) for rel in rels]
            return
        with tempfile.TemporaryDirectory(prefix="kard-track-") as tmp:
            pairs = []
            for rel in rels:
                local = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                with open(local, "wb") as fh:
                    fh.write(self.run.read_bytes(f"{name}/{rel}"))
                pairs.append((rel, local))
            yield pairs
