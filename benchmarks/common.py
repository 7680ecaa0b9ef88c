"""Shared benchmark helpers: memory of the whole process tree, synthetic text, one JSON result line."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np


def _children(pid: int, ppids: dict[int, int]) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(c for c, pp in ppids.items() if pp == p)
    return out


def tree_pss_mb(root: int | None = None) -> float:
    """Proportional set size (shared pages split fairly) of a process and all its descendants, MiB."""
    root = root or os.getpid()
    ppids: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppids[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    total_kb = 0
    for pid in _children(root, ppids):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            pass
    return total_kb / 1024


class PeakMemory:
    """Samples the process tree's PSS in the background; ``peak_mb`` after ``stop()``."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s, self.peak_mb = interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_pss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, tree_pss_mb())


class Timer:
    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0


def zipf_vocabulary(rng: np.random.Generator, size: int) -> tuple[list[str], np.ndarray]:
    """Invented words with Zipf-like frequencies (s = 1.1), as in natural text."""
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "zo", "an", "el", "is", "or", "um", "ba", "de"]
    words, seen = [], set()
    while len(words) < size:
        w = "".join(rng.choice(syll, size=rng.integers(2, 5)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    p = 1.0 / np.arange(1, size + 1) ** 1.1
    return words, p / p.sum()


def synthetic_passages(n: int, seed: int = 0, vocab: int = 50_000, mean_words: int = 80,
                       words: tuple[list[str], np.ndarray] | None = None) -> list[str]:
    """Passages of realistic length (about 80 words, like 100-word Wikipedia passages) and vocabulary;
    ``words`` reuses a vocabulary (the seed then only draws the passages)."""
    rng = np.random.default_rng(seed)
    vocab_words, p = words or zipf_vocabulary(rng, vocab)
    table = np.array(vocab_words, dtype=object)
    lengths = np.clip(rng.normal(mean_words, 25, size=n).astype(int), 10, 200)
    ids = rng.choice(len(vocab_words), size=int(lengths.sum()), p=p)
    out, pos = [], 0
    for ln in lengths:
        out.append(" ".join(table[ids[pos : pos + ln]]) + ".")
        pos += ln
    return out


def write_synthetic_kb(path: str, n: int, seed: int, paragraphs: int = 5) -> int:
    """One JSONL KB file of ``n`` synthetic passages as documents of ``paragraphs`` paragraphs each, written
    50k passages at a time (so a 10M-passage KB is generated file by file in bounded memory)."""
    words = zipf_vocabulary(np.random.default_rng(0), 50_000)  # one vocabulary for every file
    with open(path, "w") as f:
        for start in range(0, n, 50_000):
            chunk = synthetic_passages(min(50_000, n - start), seed=seed * 1_000_003 + start, words=words)
            for i in range(0, len(chunk), paragraphs):
                f.write(json.dumps({"id": f"s{seed}-{start + i}", "text": "\n\n".join(chunk[i : i + paragraphs])})
                        + "\n")
    return n


def synthetic_queries(passages: list[str], n: int, seed: int = 1) -> list[str]:
    """Queries of 4-10 words taken from random passages (so each has relevant documents)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(passages), size=n):
        toks = passages[i].rstrip(".").split()
        k = min(len(toks), int(rng.integers(4, 11)))
        out.append(" ".join(rng.choice(toks, size=k, replace=False)))
    return out


def emit(result: dict) -> None:
    """The benchmark's result: one JSON object on the last line."""
    print(json.dumps(result, sort_keys=False))


def cpu_info() -> dict:
    """The machine a figure was measured on: CPU model, cores and the vector units that decide CPU speed
    (machines of the same kind differ: AVX-512 or AVX2 only, ~3.5x on this project's demo)."""
    import os
    import platform

    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
            os.cpu_count(), "vector_flags": [f for f in wanted if f in flags]}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_on_loopback(run_dir: str, direct_ingress: bool = False) -> tuple[str, list[dict]]:
    """Ray (8 logical CPUs) and Serve's proxy on 127.0.0.1 for a finished run: the ``/v1/answer`` URL, and request
    bodies made from the run's test questions. ``direct_ingress``: the URL is the app's ingress replica's own, no
    proxy between (``serve/direct_ingress.py``)."""
    from ray import serve

    from kard_ray.artifacts import RunDir
    from kard_ray.config import RayConfig
    from kard_ray.runtime import init_ray
    from kard_ray.stages.data import read_split

    questions = read_split(RunDir(run_dir), "test")
    bodies = [{"question": q.question, "options": q.options, "return_passages": False} for q in questions]
    port = proxy = free_port()
    if direct_ingress:  # the app's first ingress replica will listen on ``port``, the proxy beside it
        from serve.direct_ingress import enable_direct_ingress

        proxy = enable_direct_ingress(port)
    init_ray(RayConfig(num_cpus=8))
    serve.start(http_options={"host": "127.0.0.1", "port": proxy})
    return f"http://127.0.0.1:{port}/v1/answer", bodies
