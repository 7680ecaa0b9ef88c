"""Distributed reranker training with Ray Train: DDP workers, Ray Data shards, checkpoints, resume.

``train_loop`` runs on every worker. It resumes from ``ray.train.get_checkpoint()`` (the latest
checkpoint in the run's storage) at the exact step it stopped: epoch, batch within the epoch,
optimizer and scheduler state. Checkpoints are plain HF folders plus ``trainer_state.pt`` (loaded
with ``weights_only=True``: no arbitrary pickle).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from kard_ray.batching import epoch_batches
from kard_ray.config import RerankerConfig
from kard_ray.devices import autocast_and_scaler, clipped_step
from kard_ray.efficiency import efficiency, matmul_probe, parameter_counts, settled_probe, training_flops
from kard_ray.fs import local_copy
from kard_ray.reranker.candidates import sample_candidates
from kard_ray.reranker.hops import hop_query, training_hop
from kard_ray.reranker.losses import LOSSES, annealed
from kard_ray.reranker.model import load_reranker, save_architecture, score_matrix
from kard_ray.retrieval.passages import PassageStore
from kard_ray.runtime import use_assigned_cores
from kard_ray.training import freeze_below_top, gather_state, read_shard, report, resume_progress, save_model_dir


def save_checkpoint_dir(path: str, model, tokenizer, gathered, scheduler, progress: dict[str, int],
                        cfg: RerankerConfig) -> None:
    save_model_dir(path, model, tokenizer, gathered, scheduler, progress)
    save_architecture(path, cfg.architecture, cfg.bi_scale, cfg.hops)


def build_batch(rows: list[dict[str, Any]], store, rng: np.random.Generator, n: int, hops: int = 1):
    """Queries (one per row; with ``hops`` > 1 some are expanded with the rationale's best passages),
    passage texts (n per row), targets and mask for one step."""
    import torch

    queries, texts, targets, mask = [], [], [], []
    for r in rows:
        sources, tgt, cands = np.asarray(r["cand_sources"]), np.asarray(r["cand_targets"]), np.asarray(r["cand_rows"])
        given, keep = training_hop(rng, hops, tgt)
        idx = keep[sample_candidates(rng, sources[keep], tgt[keep], n)]
        chosen = store.texts(cands[idx].tolist())
        pad = n - len(idx)
        queries.append(hop_query(r["query"], store.texts(cands[given].tolist())))
        texts += chosen + [""] * pad
        targets.append(list(tgt[idx]) + [0.0] * pad)
        mask.append([True] * len(idx) + [False] * pad)
    return queries, texts, torch.tensor(targets, dtype=torch.float32), torch.tensor(mask)


def train_loop(config: dict[str, Any]) -> None:
    import ray.train
    import torch
    from transformers import get_linear_schedule_with_warmup


    entered = time.perf_counter()
    cfg = RerankerConfig.model_validate(config["reranker"])
    use_assigned_cores()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    store = PassageStore(local_copy(config["passages_uri"]))  # on this worker's node
    tokenizer, model = load_reranker(cfg.model, cfg.architecture, cfg.trust_remote_code, cfg.lora)
    if cfg.train_layers and not cfg.lora:
        freeze_below_top(model, cfg.train_layers, heads=("classifier",))
    params, trainable = parameter_counts(model)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.01)
    steps_per_epoch = config["steps_per_epoch"]
    total = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    progress, history = resume_progress(model, optimizer, scheduler)
    resumed_from = progress["step"]
    loss_fn = LOSSES[cfg.loss]
    autocast, scaler = autocast_and_scaler(device, cfg.precision)
    rows = read_shard("train")  # this worker's share, once: each epoch orders it by a seeded permutation
    probe = matmul_probe(device=device)

    def gather():
        return gather_state(model, optimizer)

    def save(path: str, gathered) -> None:
        save_checkpoint_dir(path, model, tokenizer, gathered, scheduler, progress, cfg)

    setup_s = round(time.perf_counter() - entered, 2)  # model, shard, probe: the worker's share of the start-up
    model.train()
    history.restart_clock()
    for epoch in range(progress["epoch"], cfg.epochs):
        losses, pairs, stats, t0 = [], 0, {}, time.perf_counter()
        batches = epoch_batches(epoch, rank, cfg.seed, cfg.batch_size, steps_per_epoch, n_rows=len(rows))
        for i in range(progress["batch"], steps_per_epoch):  # a resumed run starts at the batch it stopped before
            tokens_before = stats.get("real_tokens", 0)
            rng = np.random.default_rng([cfg.seed, epoch, rank, i])  # the batch's candidates, the same on a rerun
            queries, texts, targets, mask = build_batch([rows[j] for j in batches[i]], store, rng,
                                                        cfg.candidates_per_step, cfg.hops)
            frac = progress["step"] / max(total, 1)
            tau1 = annealed(cfg.tau1, cfg.tau1_end or cfg.tau1, frac) if cfg.anneal_tau else cfg.tau1
            tau2 = annealed(cfg.tau2, cfg.tau2_end or cfg.tau2, frac) if cfg.anneal_tau else cfg.tau2
            with autocast:
                scores = score_matrix(model, tokenizer, queries, texts, cfg.candidates_per_step,
                                      architecture=cfg.architecture, max_length=cfg.max_length,
                                      scale=cfg.bi_scale, device=device, stats=stats)
            loss = loss_fn(scores, targets.to(device), mask.to(device), tau1=tau1, tau2=tau2)
            lr = scheduler.get_last_lr()[0]
            optimizer.zero_grad()
            (scaler.scale(loss) if scaler else loss).backward()
            clipped_step(optimizer, scaler, model.parameters())
            scheduler.step()
            losses.append(loss.item())
            pairs += int(mask.sum())
            progress.update(batch=i + 1, step=progress["step"] + 1)
            history.record(progress["step"], losses[-1], lr, stats.get("real_tokens", 0) - tokens_before, world)
            if cfg.checkpoint_every_steps and progress["step"] % cfg.checkpoint_every_steps == 0 \
                    and progress["batch"] < steps_per_epoch:
                report({"epoch": epoch, "step": progress["step"], "loss": float(np.mean(losses[-20:])),
                        "resumed_from_step": resumed_from}, save, gather, history)
                history.restart_clock()
        elapsed, probe = time.perf_counter() - t0, settled_probe(probe, device)
        progress.update(epoch=epoch + 1, batch=0)
        report({"epoch": epoch, "step": progress["step"], "loss": float(np.mean(losses)) if losses else math.nan,
                "pairs_per_s": pairs * world / elapsed if elapsed else 0.0, "resumed_from_step": resumed_from,
                "setup_s": setup_s,
                "efficiency": efficiency(training_flops(stats.get("tokens", 0), params, trainable), elapsed, probe,
                                         tokens_per_s=round(stats.get("real_tokens", 0) * world / elapsed, 1)
                                         if elapsed else 0.0, workers=world),
                "epoch_end": True}, save, gather, history)
        history.restart_clock()
