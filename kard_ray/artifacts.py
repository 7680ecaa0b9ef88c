"""The run directory: one folder per stage, each committed by its ``manifest.json``.

Stages talk only through this directory, which may be a local path or any URI that
``pyarrow.fs`` understands (``s3://``, ``gs://``, ``file://``). The protocol that makes runs
resumable and safe against half-written output:

1. a stage's *key* is the hash of its config sections plus the fingerprints of its inputs
   (files by content, upstream stages by their manifests);
2. if ``<stage>/manifest.json`` exists with the same key, the stage is skipped;
3. otherwise the old manifest is deleted *first*, the stage writes its outputs, and the
   manifest is written *last* in one atomic put (a rename locally). A crash at any point
   therefore leaves no manifest, and the stage runs again next time.

Rename is not atomic on object stores, so the manifest, not a directory rename, is the commit
marker; a single-object PUT is atomic on S3 and GCS.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel

from kard_ray.config import config_hash
from kard_ray.fs import delete_on, fingerprint_path, open_atomic_on, resolve_fs

MANIFEST = "manifest.json"
WORK_KEY = "_work_key"  # the key a half-written, resumable stage folder belongs to


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("kard-ray", "ray", "torch", "transformers", "pyarrow", "openai"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class StageResult:
    """What a stage body reports: row counts and any extra facts for its manifest.

    ``scratch``: run-relative paths the stage kept only to resume if killed (training checkpoints);
    they are deleted once the manifest lands, when nothing can need them any more.
    """

    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    scratch: list[str] = field(default_factory=list)


class RunDir:
    """A run directory on any pyarrow filesystem."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/") if "://" in uri else str(Path(uri).expanduser().resolve())
        self.fs, self.root = resolve_fs(uri)
        self.fs.create_dir(self.root, recursive=True)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    # ---- paths
    def path(self, *parts: str) -> str:
        """Filesystem path (no scheme) under the run root."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def uri_of(self, *parts: str) -> str:
        """Full URI (with scheme for remote stores) for handing to Ray Data / Ray Train."""
        if self.is_local:
            return self.path(*parts)
        scheme = self.uri.split("://", 1)[0]
        return f"{scheme}://{self.path(*parts)}"

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> str:
        p = self.path(*parts)
        self.fs.create_dir(p, recursive=True)
        return p

    def delete(self, *parts: str) -> None:
        delete_on(self.fs, self.path(*parts))

    # ---- atomic small files
    def write_bytes(self, rel: str, data: bytes, durable: bool = True) -> None:
        """Write a file so that readers see the old content or the new one, never a torn one (a single PUT
        on object stores). ``durable=False`` skips fsync: the file survives a killed process, not a lost
        machine."""
        with open_atomic_on(self.fs, self.path(rel), durable=durable) as f:
            f.write(data)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=False, default=str).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    # ---- tables
    def write_table(self, rel: str, table: pa.Table) -> None:
        target = self.path(rel)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, target, filesystem=self.fs)

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs, columns=columns)

    # ---- config
    def save_config(self, cfg: BaseModel, rel: str) -> None:
        """The resolved config as YAML at ``rel`` (the registry names the run's: ``RESOLVED_CONFIG``)."""
        self.write_text(rel, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    # ---- manifests
    def manifest(self, stage: str) -> dict[str, Any] | None:
        if not self.exists(stage, MANIFEST):
            return None
        return self.read_json(f"{stage}/{MANIFEST}")

    def is_done(self, stage: str, key: str | None = None) -> bool:
        m = self.manifest(stage)
        return m is not None and (key is None or m.get("key") == key)

    def list_outputs(self, stage: str) -> list[dict[str, Any]]:
        base = self.path(stage)
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return [
            {"path": i.path[len(base) + 1 :], "bytes": i.size}
            for i in sorted(infos, key=lambda i: i.path)
            if i.type == pafs.FileType.File and not i.path.endswith(MANIFEST)
        ]


def _resumable(run: RunDir, name: str, key: str) -> bool:
    """Whether a stage folder left by an interrupted run was written under this key."""
    return run.exists(name, WORK_KEY) and run.read_bytes(f"{name}/{WORK_KEY}").decode() == key


def stage_key(config_parts: Iterable[Any], inputs: Mapping[str, str]) -> str:
    return config_hash(list(config_parts), dict(sorted(inputs.items())))


def stage_fingerprints(run: RunDir, name: str, inputs: Mapping[str, str], upstream: Iterable[str]) -> dict[str, str]:
    """What a stage's key covers besides its config: its input files by content, its upstream stages by key."""
    fingerprints: dict[str, str] = {k: fingerprint_path(v) for k, v in inputs.items()}
    for up in upstream:
        m = run.manifest(up)
        if m is None:
            raise RuntimeError(f"stage {name!r} needs stage {up!r}, which has not finished in {run.uri}")
        fingerprints[f"stage:{up}"] = m["key"]
    return fingerprints


def run_stage(
    run: RunDir,
    name: str,
    body: Callable[[RunDir], StageResult],
    *,
    config: Iterable[Any] = (),
    inputs: Mapping[str, str] | None = None,
    upstream: Iterable[str] = (),
    force: bool = False,
    clean: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``body`` as stage ``name`` unless a matching manifest says it is already done.

    ``inputs`` maps names to file/folder URIs, fingerprinted by content; ``upstream`` names
    earlier stages whose manifest keys become part of this stage's key. ``clean=False`` keeps
    a half-written stage folder, under the same key only, so a body that checkpoints resumes.
    """
    fingerprints = stage_fingerprints(run, name, inputs or {}, upstream)
    key = stage_key(config, fingerprints)

    existing = run.manifest(name)
    if existing is not None and existing.get("key") == key and not force:
        log(f"[{name}] up to date (key {key}); skipped. Use --force to rerun.")
        return {**existing, "up_to_date": True}

    # Uncommit first: from here until the new manifest lands, the stage reads as unfinished.
    run.delete(name, MANIFEST)
    if clean or force or not _resumable(run, name, key):
        run.delete(name)
    run.makedirs(name)
    if not clean:  # what is kept of an interrupted run is reused only under the same key
        run.write_text(f"{name}/{WORK_KEY}", key)
    started = time.time()
    result = body(run)
    finished = time.time()
    run.delete(name, WORK_KEY)
    manifest = {
        "stage": name,
        "key": key,
        "config_hash": config_hash(*list(config)) if config else None,
        "inputs": fingerprints,
        "counts": result.counts,
        **({"extra": result.extra} if result.extra else {}),
        "outputs": run.list_outputs(name),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(finished - started, 3),
        "versions": _versions(),
    }
    run.write_json(f"{name}/{MANIFEST}", manifest)
    for rel in result.scratch:
        run.delete(rel)
    log(f"[{name}] done in {manifest['duration_s']:.1f}s: {result.counts}")
    return manifest
