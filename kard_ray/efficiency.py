"""How much of the machine a stage uses: achieved FLOP/s against a matmul probe run in the same process.

Machines of the same kind differ (AVX-512 or not, shared cores), so absolute tokens/s say little; the
share of what a plain fp32 matmul attains with the same threads is comparable across machines. FLOPs
are the usual transformer estimate (Kaplan et al. 2020): 2 per parameter per token forward, and
4 per *trainable* parameter per token backward (gradients of activations and weights; backward stops at
the lowest trainable block, so frozen blocks below cost only their forward).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class PhaseClock:
    """Seconds per named phase of a stage (training, export, report...), for its manifest: where the time outside
    the measured loops goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 2)


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


def _blocks(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, efficiency block) of a stage manifest: one for a training stage, one per student for evaluation."""
    eff = (manifest.get("extra") or {}).get("efficiency") or {}
    if "achieved_gflops" in eff:
        return [(manifest["stage"], eff)]
    return [(f"{manifest['stage']}: {name}", block) for name, block in eff.items() if isinstance(block, dict)]


def _busy_s(manifests: list[dict[str, Any]]) -> float:
    """Seconds in which at least one stage ran: stages that ran side by side count once, and the time between two
    invocations (a stage rerun later) not at all."""
    import calendar

    spans = sorted((start, start + (m.get("duration_s") or 0.0)) for m in manifests if m.get("started_at")
                   for start in [calendar.timegm(time.strptime(m["started_at"], "%Y-%m-%dT%H:%M:%SZ"))])
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        total += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return total


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def floor_table(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's stages against their compute floor: per stage (wall, loop, TFLOP, floor, share of probe), and for
    the run its wall (the seconds in which a stage ran), the floor, their ratio and the time outside the loops.

    The ratio is the figure to compare across machines and days: both sides scale with the machine's speed."""
    rows, stage_s, floor, loops = [], 0.0, 0.0, 0.0
    manifests = sorted(manifests, key=lambda m: m.get("started_at") or "")  # pipeline order
    for manifest in manifests:
        stage_s += manifest.get("duration_s") or 0.0
        blocks = _blocks(manifest)
        if not blocks:
            rows.append({"stage": manifest["stage"], "wall_s": _round(manifest.get("duration_s"))})
            continue
        for i, (label, block) in enumerate(blocks):
            f = compute_floor(block)
            floor += f or 0.0
            loops += block.get("compute_s") or 0.0
            rows.append({"stage": label, "wall_s": _round(manifest.get("duration_s")) if i == 0 else None,
                         "loop_s": block.get("compute_s"), "tflop": block.get("tflops"),
                         "probe_gflops": block.get("probe_gflops"), "floor_s": round(f, 1) if f is not None else None,
                         "share_of_probe": block.get("share_of_probe")})
    wall = _busy_s(manifests) or stage_s
    outside = max(wall - loops, 0.0)
    return {"rows": rows, "wall_s": round(wall, 1), "stage_s": round(stage_s, 1), "loops_s": round(loops, 1),
            "floor_s": round(floor, 1), "wall_over_floor": round(wall / floor, 2) if floor else None,
            "outside_loops_s": round(outside, 1), "outside_loops_share": round(outside / wall, 3) if wall else None}


def floor_summary(table: dict[str, Any]) -> str:
    """The run's two figures against its own machine: wall over floor, and the share outside the measured loops."""
    if table["wall_over_floor"] is None:
        return f"wall {table['wall_s']} s; no FLOP counts in the manifests"
    return (f"wall {table['wall_s']} s = {table['wall_over_floor']}x the compute floor of {table['floor_s']} s; "
            f"{table['outside_loops_s']} s ({table['outside_loops_share']:.0%}) outside the training and "
            f"generation loops")
