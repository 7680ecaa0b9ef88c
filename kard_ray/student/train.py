"""Student fine-tuning with Ray Train: DDP, gradient accumulation, warmup schedule, mixed precision on
GPU, gradient checkpointing, length-grouped batches, eval loss each epoch, checkpoints and resume.

Each worker reads its Ray Data shard of tokenized examples once, then orders it per epoch with a
seeded length-grouped permutation, so a resumed run replays the exact same batches from where it
stopped.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from kard_ray import parallel
from kard_ray.batching import epoch_batches
from kard_ray.config import StudentConfig
from kard_ray.devices import autocast_and_scaler, clipped_step
from kard_ray.efficiency import efficiency, matmul_probe, parameter_counts, settled_probe, training_flops
from kard_ray.parallel import unwrap
from kard_ray.runtime import use_assigned_cores
from kard_ray.student.formats import build_prompt, target_text
from kard_ray.student.model import Tokens, collate, load_student, logits_window, student_loss, tokenize_example
from kard_ray.training import freeze_below_top, gather_state, read_shard, report, resume_progress, save_model_dir


def tokenize_rows(rows: list[dict[str, Any]], tokenizer, cfg: StudentConfig, method: str) -> tuple[list[Tokens], int]:
    """(token ids, passages trimmed): each prompt packed to the input budget as evaluation and Serve pack it.
    Each worker tokenizes its own shard with the tokenizer it trains with: no separate tokenizing actors."""
    examples, trimmed = [], 0
    for r in rows:
        prompt = build_prompt(tokenizer, method, r["question"], r["options"], r["passages"], cfg.max_input_length)
        target = target_text(method, r["rationale"], r["options"], r["answer"])
        examples.append(tokenize_example(tokenizer, prompt.text, target, cfg.max_input_length, cfg.max_target_length))
        trimmed += prompt.passages_trimmed
    return examples, trimmed


def _reduce_over_workers(value: int, device, op: str) -> int:
    """``value`` reduced over the workers (the process group Ray Train set up: gloo on CPU, NCCL on GPU, which
    reduces only tensors on the worker's device). Every rank must call it."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    total = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(total, op=getattr(dist.ReduceOp, op))
    return int(total.item())


def sum_over_workers(value: int, device) -> int:
    return _reduce_over_workers(value, device, "SUM")


def max_over_workers(value: int, device) -> int:
    return _reduce_over_workers(value, device, "MAX")


def schedule(n_rows: int, cfg: StudentConfig, workers: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps): every worker takes the same number of steps."""
    per_epoch = max(1, math.ceil(n_rows / (cfg.batch_size * workers * cfg.grad_accum)))
    total = per_epoch * cfg.epochs
    return per_epoch, min(total, cfg.max_steps) if cfg.max_steps else total


def eval_loss(model, examples: list[Tokens], cfg: StudentConfig, family: str, pad_id: int, device,
              filler: list[Tokens] = ()) -> float:
    """Mean target-token loss on this worker's held-out examples. Under FSDP every forward is a collective, so
    every worker runs as many batches as the one with most (extra ones on ``filler``, not counted)."""
    import torch

    batches = math.ceil(len(examples) / cfg.batch_size)
    if cfg.strategy == "fsdp":
        batches = max_over_workers(batches, device)
    if not batches:
        return math.nan
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, batches * cfg.batch_size, cfg.batch_size):
            chunk = examples[i:i + cfg.batch_size]
            inputs, _, _ = collate(chunk or list(filler[:cfg.batch_size]) or examples[:1], family, pad_id)
            loss = student_loss(model, {k: v.to(device) for k, v in inputs.items()}).item()
            if chunk:
                n = int((inputs["labels"] != -100).sum())
                total, count = total + loss * n, count + n
    model.train()
    return total / count if count else math.nan


def train_loop(config: dict[str, Any]) -> None:
    import ray.train
    import torch
    from transformers import get_linear_schedule_with_warmup


    entered = time.perf_counter()
    cfg = StudentConfig.model_validate(config["student"])
    use_assigned_cores()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    tokenizer, model = load_student(cfg.model, cfg.family, cfg.trust_remote_code, cfg.lora)
    if cfg.train_layers and not cfg.lora:
        freeze_below_top(model, cfg.train_layers)
    if cfg.gradient_checkpointing:
        unwrap(model).gradient_checkpointing_enable()
    head_weight = unwrap(model).get_output_embeddings().weight
    head = head_weight.numel() * (2 + 4 * head_weight.requires_grad)  # its FLOPs per position, as training_flops
    params, trainable = parameter_counts(model)  # before sharding: the whole model's
    model = parallel.place(model, cfg.strategy)
    device = ray.train.torch.get_device()
    pad_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    steps_per_epoch, total = config["steps_per_epoch"], config["total_steps"]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    progress, history = resume_progress(model, optimizer, scheduler, cfg.strategy)
    resumed_from = progress["step"]
    autocast, scaler = autocast_and_scaler(device, cfg.precision)
    train, trimmed = tokenize_rows(read_shard("train"), tokenizer, cfg, config["method"])
    held_out, _ = tokenize_rows(read_shard("eval"), tokenizer, cfg, config["method"])
    trimmed = sum_over_workers(trimmed, device)
    probe = matmul_probe(device=device)
    lengths = np.array([len(e.prompt) + len(e.target) for e in train])

    def gather():
        return gather_state(model, optimizer, cfg.strategy)

    def save(path: str, gathered) -> None:
        save_model_dir(path, model, tokenizer, gathered, scheduler, progress)

    def held_out_loss() -> float:
        return eval_loss(model, held_out, cfg, cfg.family, pad_id, device, filler=train)

    setup_s = round(time.perf_counter() - entered, 2)  # model, shard, tokens, probe: the worker's start-up
    model.train()
    if progress["step"] >= total:  # restarted after the last checkpoint: report it again so the run has a result
        report({"epoch": progress["epoch"], "step": progress["step"], "total_steps": total, "loss": math.nan,
                "eval_loss": held_out_loss(), "tokens_per_s": 0.0,
                "padding_share": 0.0, "resumed_from_step": resumed_from, "passages_trimmed": trimmed,
                "epoch_end": True}, save, gather, history)
    history.restart_clock()
    while progress["step"] < total:
        epoch = progress["epoch"]
        batches = epoch_batches(epoch, rank, cfg.seed, cfg.batch_size, steps_per_epoch * cfg.grad_accum,
                                lengths=lengths if cfg.group_by_length else None, n_rows=len(lengths))
        losses, real_tokens, padded_tokens, t0 = [], 0, 0, time.perf_counter()
        head_skipped = 0  # positions whose vocabulary projection the loss did not need (not computed)
        for step_in_epoch in range(progress["batch"], steps_per_epoch):
            if progress["step"] >= total:
                break
            step_loss, step_tokens = 0.0, 0
            for micro in range(cfg.grad_accum):
                inputs, real, padded = collate([train[i] for i in batches[step_in_epoch * cfg.grad_accum + micro]],
                                               cfg.family, pad_id)
                window = logits_window(model, inputs["labels"])
                head_skipped += inputs["labels"].shape[0] * (inputs["labels"].shape[1] - window)
                with autocast:
                    loss = student_loss(model, {k: v.to(device) for k, v in inputs.items()}, window) / cfg.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
                step_loss += loss.item()
                real_tokens, padded_tokens, step_tokens = real_tokens + real, padded_tokens + padded, step_tokens + real
            lr = scheduler.get_last_lr()[0]
            clipped_step(optimizer, scaler, model.parameters())
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            progress.update(batch=step_in_epoch + 1, step=progress["step"] + 1)
            history.record(progress["step"], step_loss, lr, step_tokens, world)
            if cfg.checkpoint_every_steps and progress["step"] % cfg.checkpoint_every_steps == 0 \
                    and progress["step"] < total and progress["batch"] < steps_per_epoch:
                report({"epoch": epoch, "step": progress["step"], "loss": float(np.mean(losses[-20:])),
                        "resumed_from_step": resumed_from}, save, gather, history)
                history.restart_clock()
        elapsed, probe = time.perf_counter() - t0, settled_probe(probe, device)
        progress.update(epoch=epoch + 1, batch=0)
        report({"epoch": epoch, "step": progress["step"], "total_steps": total,
                "loss": float(np.mean(losses)) if losses else math.nan,
                "eval_loss": held_out_loss(),
                "tokens_per_s": real_tokens * world / elapsed if elapsed and losses else 0.0,
                "padding_share": 1 - real_tokens / padded_tokens if padded_tokens else 0.0,
                "efficiency": efficiency(training_flops(padded_tokens, params, trainable) - head * head_skipped,
                                         elapsed, probe,
                                         tokens_per_s=round(real_tokens * world / elapsed, 1) if elapsed else 0.0,
                                         workers=world),
                "resumed_from_step": resumed_from, "passages_trimmed": trimmed, "setup_s": setup_s,
                "epoch_end": True}, save, gather, history)
        history.restart_clock()
