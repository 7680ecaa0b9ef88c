"""How a model is spread over Ray Train's workers: ``ddp`` (a full replica each) or ``fsdp`` (parameters,
gradients and optimizer state sharded across the workers).

FSDP is PyTorch's ``fully_shard`` (FSDP2), one unit per transformer block and one for the rest: a 3B student
(fp32 weights, gradients and AdamW state: ~48 GB) fits eight 24 GB GPUs, where DDP needs all of it on each.
It needs no extra package (DeepSpeed ZeRO-3 would, with compiled ops), runs on CPU with gloo as on GPU with
NCCL, so the same code is tested here; Ray Train's own ``prepare_model(parallel_strategy="fsdp")`` is FSDP1,
which crashes on CPU. Checkpoints stay one plain HF folder: the full state is gathered to rank 0 (on CPU) for
saving, and every worker loads the full state back and keeps its shard, so a sharded run resumes like DDP.
"""

from __future__ import annotations

from typing import Any

STRATEGIES = ("ddp", "fsdp")


def unwrap(model):
    """The model inside DDP's wrapper."""
    return model.module if hasattr(model, "module") else model


def block_stacks(model) -> list:
    """The model's main block stacks: the ``ModuleList`` that holds the most parameters (decoder layers of a causal
    LM, BERT's encoder layers; not a T5 block's list of sublayers), for an encoder-decoder (T5) the encoder's and
    the decoder's."""
    import torch

    def main_stack(module):
        stacks = [m for m in module.modules() if isinstance(m, torch.nn.ModuleList)]
        return max(stacks, key=lambda m: (sum(p.numel() for p in m.parameters()), len(m))) if stacks else None

    parts = [model.get_encoder(), model.get_decoder()] \
        if getattr(getattr(model, "config", None), "is_encoder_decoder", False) else [model]
    return [s for s in map(main_stack, parts) if s is not None]


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def place(model, strategy: str = "ddp"):
    """The model on this worker's device, wrapped for ``strategy`` (call after freezing layers)."""
    import ray.train.torch

    if strategy == "ddp":
        return ray.train.torch.prepare_model(model)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = ray.train.torch.get_device()
    model.to(device)
    if not _distributed():
        return model
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for blocks in block_stacks(model):
        for block in blocks:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model, strategy: str) -> dict[str, Any] | None:
    """FSDP: the whole model's weights on rank 0 (a collective: every rank calls it). DDP: None (each replica
    holds them all; save from the model)."""
    if strategy == "ddp" or not _distributed():
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def optimizer_state(model, optimizer, strategy: str) -> dict[str, Any]:
    """The optimizer state to save (FSDP: gathered whole, a collective)."""
    if strategy == "ddp" or not _distributed():
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_model_state(model, state: dict[str, Any], strategy: str) -> None:
    """Full weights into the (possibly sharded) model: every rank keeps its shard."""
    if strategy == "ddp" or not _distributed():
        unwrap(model).load_state_dict(state, strict=False)  # tied weights are saved once
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def load_optimizer_state(model, optimizer, state: dict[str, Any], strategy: str) -> None:
    if strategy == "ddp" or not _distributed():
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
