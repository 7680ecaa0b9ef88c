"""Files at a local path or any URI that ``pyarrow.fs`` understands (``s3://``, ``gs://``, ``file://``): atomic
writes, streamed uploads, content fingerprints and local copies for memory-mapping. No project imports: every
layer above (the run directory, the libraries) reads and writes through these."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

_QUICK_HASH_LIMIT = 64 * 1024 * 1024  # files above this are fingerprinted by size + head + tail


def fingerprint_bytes_stream(stream: io.RawIOBase | Any, size: int) -> str:
    """sha256 of a file's content; above 64 MiB only of its size, first and last 8 MiB."""
    h = hashlib.sha256()
    if size <= _QUICK_HASH_LIMIT:
        while chunk := stream.read(1 << 20):
            h.update(chunk)
        return "sha256:" + h.hexdigest()
    part = 8 << 20
    h.update(str(size).encode())
    h.update(stream.read(part))
    stream.seek(size - part)
    h.update(stream.read(part))
    return "quick-sha256:" + h.hexdigest()


def resolve_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or URI; local paths are made absolute."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def fingerprint_path(uri: str) -> str:
    """Content fingerprint of a file, or of every file under a folder (names and contents)."""
    fs, path = resolve_fs(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    if info.type == pafs.FileType.File:
        with fs.open_input_file(path) as f:
            return fingerprint_bytes_stream(f, info.size)
    h = hashlib.sha256()
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    for sub in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
        with fs.open_input_file(sub.path) as f:
            h.update(sub.path[len(path) :].encode())
            h.update(fingerprint_bytes_stream(f, sub.size).encode())
    return "dir-sha256:" + h.hexdigest()


def temp_name(path: str) -> str:
    """A hidden sibling of ``path`` to write before renaming: readers of a folder of parts (pyarrow datasets
    skip names starting with "."), never see one that a killed writer left behind."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def open_atomic(uri: str, durable: bool = False) -> Iterator[Any]:
    """A writable stream whose file appears whole or not at all (:func:`open_atomic_on`) at a path or URI."""
    with open_atomic_on(*resolve_fs(uri), durable=durable) as f:
        yield f


@contextlib.contextmanager
def open_atomic_on(fs: pafs.FileSystem, path: str, durable: bool = False) -> Iterator[Any]:
    """A writable stream whose file appears whole or not at all: a temporary file renamed into place on
    local disk (``durable``: fsynced first, so it survives a lost machine, not only a killed process); on
    object stores the upload itself (multipart for large files, committed when it closes). Writing in pieces
    streams: nothing needs the whole file in memory."""
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as f:
            yield f
        return
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_bytes(uri: str, data: bytes) -> None:
    """Write a whole file to a local path or URI (parent folders created)."""
    with open_atomic(uri) as f:
        f.write(data)


def save_npy(uri: str, array: Any) -> None:
    """np.save to a local path or URI, streamed in 16 MiB pieces; local .npy files can be memory-mapped."""
    import numpy as np

    with open_atomic(uri) as f:
        np.save(f, np.ascontiguousarray(array))


def read_json_if_exists(uri: str) -> Any:
    """A JSON file at a path or URI, or None when there is none (markers, plans written last)."""
    fs, path = resolve_fs(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def delete_path(uri: str) -> None:
    """Remove a file or folder at a path or URI; nothing there is fine."""
    delete_on(*resolve_fs(uri))


def delete_on(fs: pafs.FileSystem, path: str) -> None:
    """Remove a file or folder at ``path`` of ``fs``; nothing there is fine."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def upload_file(local_path: str, uri: str, piece: int = 8 << 20) -> None:
    """Copy a local file to a path or URI piece by piece (a multipart upload on object stores)."""
    with open(local_path, "rb") as src, open_atomic(uri) as dst:
        while chunk := src.read(piece):
            dst.write(chunk)


def local_copy(uri: str, cache_root: str | None = None) -> str:
    """A local path for a file or folder: itself when local, else a cached download (for memory-mapping).

    Call it in the process that reads the files: its cache is on this node's disk, so the path it returns
    means nothing to a process on another node (hand those the URI)."""
    if "://" not in uri or uri.startswith("file://"):
        path = resolve_fs(uri)[1]
        if not os.path.exists(path):  # e.g. a path another node wrote: say so instead of a hub-id error later
            raise FileNotFoundError(f"{path} does not exist on this node; across nodes, pass a URI (s3://...)")
        return path
    root = Path(cache_root or os.environ.get("KARD_CACHE", Path.home() / ".cache" / "kard-ray"))
    fs, path = resolve_fs(uri)
    # keyed by the remote listing too (paths, sizes, mtimes): a rewritten artifact is downloaded again
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True)) if info.type == pafs.FileType.Directory \
        else [info]
    listing = sorted((i.path, i.size, i.mtime_ns) for i in infos if i.type == pafs.FileType.File)
    key = hashlib.sha256(repr((uri, listing)).encode()).hexdigest()[:16]
    target = root / key / uri.rstrip("/").rsplit("/", 1)[-1]
    done = target.parent / ".complete"
    if not done.exists():
        local = pafs.LocalFileSystem()
        for src, _, _ in listing:  # file by file: object stores have no directories to copy
            dest = target / src[len(path):].lstrip("/") if info.type == pafs.FileType.Directory else target
            dest.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(src, str(dest), source_filesystem=fs, destination_filesystem=local)
        if info.type == pafs.FileType.Directory:
            target.mkdir(parents=True, exist_ok=True)  # an empty folder is still a folder
        done.touch()
    return str(target)
