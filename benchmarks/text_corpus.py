"""A real-text KB for the dense-index benchmark, built offline from what this machine has installed.

Random words have no topics, so a coarse quantiser (IVF) has nothing to partition and IVF-PQ's recall on
them says little about a real KB. Real prose with topics is here already: the docstrings of the scientific
Python stack (one document per module) and botocore's service documentation (one document per AWS
service), about 10M words together. Each document is cut into 100-word passages by the project's own
chunker, exact duplicates are dropped and a seeded sample of ``n`` is kept, so the corpus is the same on
every machine with the same package versions (their versions are part of the result).
"""

from __future__ import annotations

import ast
import functools
import gzip
import importlib.metadata
import json
import os
import re
from collections.abc import Iterator

import numpy as np

from kard_ray.config import ChunkingConfig
from kard_ray.kb.chunking import chunk_text

DOCSTRING_PACKAGES = ("transformers", "torch", "ray", "pandas", "numpy", "scipy", "sklearn", "sympy")
_TAG = re.compile(r"<[^>]+>")
_CHUNKING = ChunkingConfig(strategy="tokens", tokens_per_chunk=100, token_overlap=0, min_chars=200)


def _package_dir(name: str) -> str | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    return os.path.dirname(spec.origin) if spec and spec.origin else None


def _docstrings(path: str) -> Iterator[str]:
    """Module, class and function docstrings of one source file, read with ``ast`` (nothing is imported)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def docstring_documents() -> Iterator[str]:
    """One document per source file of each installed package in DOCSTRING_PACKAGES (tests excluded)."""
    for name in DOCSTRING_PACKAGES:
        root = _package_dir(name)
        if root is None:
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in ("tests", "test", "testing"))
            for file in sorted(files):
                if file.endswith(".py"):
                    text = "\n".join(_docstrings(os.path.join(folder, file)))
                    if text:
                        yield text


def _documentation(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "documentation" and isinstance(value, str):
                yield " ".join(_TAG.sub(" ", value).split())
            else:
                yield from _documentation(value)
    elif isinstance(node, list):
        for value in node:
            yield from _documentation(value)


def botocore_documents() -> Iterator[str]:
    """One document per AWS service: the distinct documentation strings of its API model, HTML stripped."""
    root = _package_dir("botocore")
    if root is None:
        return
    data = os.path.join(root, "data")
    for service in sorted(os.listdir(data)):
        seen: dict[str, None] = {}
        folder = os.path.join(data, service)
        for version in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            model = os.path.join(folder, version, "service-2.json.gz")
            if os.path.exists(model):
                with gzip.open(model, "rt", encoding="utf-8") as f:
                    seen.update(dict.fromkeys(d for d in _documentation(json.load(f)) if d))
        if seen:
            yield " ".join(seen)


def sources() -> dict[str, str]:
    """The package versions the corpus came from (it changes with them)."""
    out = {}
    for name in (*DOCSTRING_PACKAGES, "botocore"):
        dist = {"sklearn": "scikit-learn"}.get(name, name)
        try:
            out[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def _all_passages() -> tuple[str, ...]:
    """Every distinct passage, in corpus order (~100 s of parsing: built once per process)."""
    passages: dict[str, None] = {}
    for documents in (docstring_documents(), botocore_documents()):
        for doc in documents:
            passages.update(dict.fromkeys(chunk_text(doc, _CHUNKING)))
    return tuple(passages)


def real_text_passages(n: int, seed: int) -> list[str]:
    """``n`` distinct 100-word passages of real text (seeded sample, in corpus order)."""
    texts = _all_passages()
    if len(texts) < n:
        raise SystemExit(f"the installed packages give {len(texts):,} real-text passages, fewer than {n:,}")
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return [texts[i] for i in keep]


def span_queries(passages: list[str], n: int, seed: int) -> list[str]:
    """Queries of 6-12 consecutive words from random passages: a phrase a user remembers from the text."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(passages), size=n):
        words = passages[i].split()
        k = min(len(words), int(rng.integers(6, 13)))
        start = int(rng.integers(0, len(words) - k + 1))
        out.append(" ".join(words[start : start + k]))
    return out
