"""Which device and which precision a process's models use: one rule for every Train worker, Data actor, Serve
replica and plain process.

A Ray process uses CUDA only when Ray assigned it GPUs: Ray leaves ``CUDA_VISIBLE_DEVICES`` alone for a process
that reserved none, so ``torch.cuda.is_available()`` there says what the *machine* has, and a CPU actor would
take ``cuda:0`` from whichever trainer or replica Ray gave it to. A process outside Ray (a script, a test) uses
CUDA when it has it. Training keeps fp32 master weights and autocasts; inference loads half precision on GPU.
Needs torch only (``benchmarks/gpu_check.py`` runs it without Ray).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

Precision = str  # "auto" | "fp32" | "bf16" | "fp16" (config.Precision)


def decide_device(in_ray_worker: bool, assigned_gpus: Sequence[Any], cuda_available: bool) -> str:
    """"cuda" or "cpu": a Ray worker by its assignment, any other process by what it can see."""
    if in_ray_worker:
        return "cuda" if assigned_gpus and cuda_available else "cpu"
    return "cuda" if cuda_available else "cpu"


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker or actor (Ray assigned it resources), not a driver or a test."""
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def assigned_gpus() -> list:
    import ray

    return list(ray.get_gpu_ids())


def process_device(cuda_available: bool | None = None):
    """This process's ``torch.device`` by :func:`decide_device` (``cuda`` is the first GPU Ray made visible)."""
    import torch

    ray_worker = in_ray_worker()
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    return torch.device(decide_device(ray_worker, assigned_gpus() if ray_worker else [], cuda))


def bf16_supported(device) -> bool:
    import torch

    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def training_precision(device, precision: Precision = "auto", bf16_ok: bool | None = None) -> str:
    """The autocast precision of a training loop: fp32 on CPU; on GPU bf16 where the card has it natively (auto),
    else fp16 (with a loss scaler); what the config names when it names one (bf16 without native support falls
    back to fp16: emulated bf16 is slower than fp32)."""
    if device.type != "cuda" or precision == "fp32":
        return "fp32"
    native = bf16_supported(device) if bf16_ok is None else bf16_ok
    if precision == "fp16" or not native:
        return "fp16"
    return "bf16"


def autocast_and_scaler(device, precision: Precision = "auto"):
    """(autocast context, GradScaler or None) for :func:`training_precision`; weights stay fp32 (the master copy)."""
    import torch

    chosen = training_precision(device, precision)
    if chosen == "fp32":
        return contextlib.nullcontext(), None
    if chosen == "fp16":
        return torch.autocast(device.type, dtype=torch.float16), torch.amp.GradScaler(device.type)
    return torch.autocast(device.type, dtype=torch.bfloat16), None


def clipped_step(optimizer, scaler, parameters, max_norm: float = 1.0) -> None:
    """One optimizer step after backward: gradients unscaled (fp16), clipped, then the step (which the scaler
    skips when fp16 gradients overflowed)."""
    import torch

    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def training_dtype():
    """Weights load in fp32 for training whatever dtype the checkpoint was saved in: AdamW on bf16 weights
    loses updates smaller than bf16's resolution (no master copy)."""
    import torch

    return torch.float32


def inference_dtype(device, bf16_ok: bool | None = None):
    """Half precision on GPU (bf16 where native, else fp16), fp32 on CPU."""
    import torch

    if device.type != "cuda":
        return torch.float32
    native = bf16_supported(device) if bf16_ok is None else bf16_ok
    return torch.bfloat16 if native else torch.float16
