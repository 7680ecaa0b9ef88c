"""How much of the machine a stage uses: achieved FLOP/s against a matmul probe run in the same process.

Machines of the same kind differ (AVX-512 or not, shared cores), so absolute tokens/s say little; the
share of what a plain fp32 matmul attains with the same threads is comparable across machines. FLOPs
are the usual transformer estimate (Kaplan et al. 2020): 2 per parameter per token forward, and
4 per *trainable* parameter per token backward (gradients of activations and weights; backward stops at
the lowest trainable block, so frozen blocks below cost only their forward).
"""

from __future__ import annotations

import time
from typing import Any


def matmul_probe(seconds: float = 0.6, n: int = 1024, windows: int = 3, device=None) -> float:
    """FLOP/s of an fp32 ``n x n`` matmul loop on ``device`` (the one the loop being measured runs on; CPU: with
    this process's torch threads): the best of a few windows, so that a neighbour's burst or the thread pool's
    start does not set the bar low."""
    import torch

    device = torch.device(device or "cpu")
    if device.type == "cuda":
        n = max(n, 4096)  # a GPU needs a bigger matmul to be busy

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        torch.mm(a, b)  # warm-up: thread pool and caches
    sync()
    best = 0.0
    for _ in range(windows):
        runs, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / windows:
            torch.mm(a, b)
            runs += 1
            sync()
        best = max(best, 2 * n**3 * runs / (time.perf_counter() - t0))
    return best


def count_tokens(stats: dict | None, enc) -> None:
    """Token positions a model computes (``tokens``, padding included) and real ones, into ``stats``."""
    if stats is not None:
        stats["tokens"] = stats.get("tokens", 0) + int(enc["input_ids"].numel())
        stats["real_tokens"] = stats.get("real_tokens", 0) + int(enc["attention_mask"].sum())


def settled_probe(earlier: float, device=None) -> float:
    """The probe taken again at the end of a stage's loop, when its own background work (Ray Data streaming
    the worker's shard while the first steps run) has stopped. Contention can only make a probe read low, so
    the larger of the two is the machine's; the first alone put the demo reranker at 3.3x "its" machine."""
    return max(earlier, matmul_probe(device=device))


def parameter_counts(model) -> tuple[int, int]:
    """(matmul parameters, trainable ones): the 2-D weights of every module but embeddings (a lookup costs
    no FLOPs); an LM head tied to the embedding is a Linear module and is counted once."""
    import torch

    total = trainable = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        for p in module.parameters(recurse=False):
            if p.ndim == 2 and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
                trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def training_flops(tokens: int, params: int, trainable: int) -> float:
    return float(tokens) * (2 * params + 4 * trainable)


def inference_flops(tokens: int, params: int) -> float:
    return 2.0 * float(tokens) * params


def efficiency(flops: float, seconds: float, probe_flops_per_s: float, **extra: Any) -> dict[str, Any]:
    """The manifest block: achieved FLOP/s, the probe's, and their ratio; with the FLOPs and the seconds they took,
    so a run's compute floor (FLOPs at the probe's speed) can be set against its wall time (``compute_floor``)."""
    achieved = flops / seconds if seconds > 0 else 0.0
    return {**extra, "tflops": float(f"{flops / 1e12:.4g}"), "compute_s": float(f"{seconds:.4g}"),
            "achieved_gflops": round(achieved / 1e9, 2), "probe_gflops": round(probe_flops_per_s / 1e9, 2),
            "share_of_probe": round(achieved / probe_flops_per_s, 3) if probe_flops_per_s else None}


def compute_floor(block: dict[str, Any]) -> float | None:
    """Seconds a manifest's efficiency block would take if every FLOP ran at the probe's speed (None: not known)."""
    tflops, probe = block.get("tflops"), block.get("probe_gflops")
    return tflops * 1e3 / probe if tflops is not None and probe else None
