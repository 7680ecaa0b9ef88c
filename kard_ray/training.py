"""What the reranker's and the student's Ray Train loops share: the shard, checkpoints, resume, reporting, launch,
export (precision and the optimizer step are in ``devices``, the epoch's batches in ``batching``).

A checkpoint is a plain HF folder (``save_pretrained``) plus ``trainer_state.pt`` with the optimizer,
scheduler and the exact position (epoch, batch, step); it is loaded with ``weights_only=True`` (no
arbitrary pickle). Checkpoints live under the run's ``train/`` folder, so rerunning a killed stage
with the same settings resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from kard_ray import parallel
from kard_ray.config import TrainWorkers
from kard_ray.fs import upload_file
from kard_ray.parallel import block_stacks, unwrap
from kard_ray.runtime import cores_per_worker, is_embedded

TRAINER_STATE = "trainer_state.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HISTORY = "history.json"  # rank 0's per-step record, carried by every checkpoint so a resumed run keeps it
NOT_MODEL_FILES = (TRAINER_STATE, HISTORY)


class StepHistory:
    """Rank 0's record of every optimizer step (loss, learning rate, tokens/s): the training curve of the report and
    of experiment tracking. It travels inside each checkpoint, so after a restart it holds each step once."""

    def __init__(self, rows: list[dict[str, float]] | None = None):
        self.rows = list(rows or [])
        self._t = time.perf_counter()

    def record(self, step: int, loss: float, lr: float, tokens: int, world: int) -> None:
        """One step; ``tokens``: the real (unpadded) tokens this worker trained on in it."""
        now = time.perf_counter()
        seconds, self._t = now - self._t, now
        self.rows.append({"step": step, "loss": round(float(loss), 6), "lr": float(lr),
                          "tokens_per_s": round(tokens * world / seconds, 1) if seconds > 0 else 0.0,
                          "time": round(time.time(), 3)})

    def restart_clock(self) -> None:
        """Not counting what happens between steps (held-out loss, checkpoints) as a step's time."""
        self._t = time.perf_counter()

    def save(self, folder: str) -> None:
        with open(os.path.join(folder, HISTORY), "w") as fh:
            json.dump(self.rows, fh)

    @classmethod
    def load(cls, folder: str) -> "StepHistory":
        """The history saved in a checkpoint folder (empty if it has none)."""
        path = os.path.join(folder, HISTORY)
        if not os.path.exists(path):
            return cls()
        with open(path) as fh:
            return cls(json.load(fh))


def export_history(run, checkpoint, history_rel: str, chart_rel: str, title: str) -> list[dict[str, float]]:
    """The finished training's step history into the stage folder, as JSON and as a loss chart (PNG)."""
    from kard_ray.evaluation.charts import loss_chart_png

    history = read_history(checkpoint)
    run.write_text(history_rel, json.dumps(history))
    if history:
        run.write_bytes(chart_rel, loss_chart_png(history, title))
    return history


def read_history(checkpoint) -> list[dict[str, float]]:
    """A finished training's step history, read from its checkpoint where it is stored (no model download)."""
    path = f"{checkpoint.path.rstrip('/')}/{HISTORY}"
    try:
        with checkpoint.filesystem.open_input_stream(path) as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return []


def save_trainer_state(path: str, optimizer_state: dict[str, Any], scheduler, progress: dict[str, int]) -> None:
    import torch

    torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), **progress},
               os.path.join(path, TRAINER_STATE))


def gather_state(model, optimizer, strategy: str = "ddp") -> tuple[dict | None, dict]:
    """(weights, optimizer state) to checkpoint: under FSDP gathered whole (every rank calls this), under DDP the
    weights are read from the model when saving."""

    return parallel.full_model_state(model, strategy), parallel.optimizer_state(model, optimizer, strategy)


def save_model_dir(path: str, model, tokenizer, gathered: tuple[dict | None, dict], scheduler,
                   progress: dict[str, int]) -> None:
    """A checkpoint folder: the model as a plain HF folder (safetensors), its tokenizer and the trainer state."""
    weights, optimizer_state = gathered
    unwrap(model).save_pretrained(path, state_dict=weights, safe_serialization=True)
    tokenizer.save_pretrained(path)
    save_trainer_state(path, optimizer_state, scheduler, progress)


def load_checkpoint_dir(path: str, model, optimizer, scheduler, strategy: str = "ddp") -> dict[str, int]:
    """Weights (full model or LoRA adapter), optimizer and scheduler back from a checkpoint folder."""
    import torch
    from safetensors.torch import load_file


    adapter = os.path.join(path, ADAPTER_WEIGHTS)
    if os.path.exists(adapter):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(unwrap(model), load_file(adapter))
    else:
        parallel.load_model_state(model, load_file(os.path.join(path, "model.safetensors")), strategy)
    state = torch.load(os.path.join(path, TRAINER_STATE), weights_only=True)
    parallel.load_optimizer_state(model, optimizer, state["optimizer"], strategy)
    scheduler.load_state_dict(state["scheduler"])
    return {k: int(state[k]) for k in ("epoch", "batch", "step")}


def resume_progress(model, optimizer, scheduler, strategy: str = "ddp") -> tuple[dict[str, int], StepHistory]:
    """Where this run stands: the latest checkpoint's position and step history, or the start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return {"epoch": 0, "batch": 0, "step": 0}, StepHistory()
    with checkpoint.as_directory() as d:
        return load_checkpoint_dir(d, model, optimizer, scheduler, strategy), StepHistory.load(d)


def read_shard(name: str) -> list[dict[str, Any]]:
    """This worker's rows of the named Ray Data dataset, as plain Python values."""
    import ray.train

    try:
        shard = ray.train.get_dataset_shard(name)
    except KeyError:  # Ray Train v2: a dataset this run was not given (no held-out rows)
        return []
    if shard is None:  # Ray Train v1 said so with None
        return []
    return [r for batch in shard.iter_batches(batch_format="pyarrow", batch_size=1024) for r in batch.to_pylist()]


def report(metrics: dict[str, Any], save: Callable[[str, Any], None] | None,
           gather: Callable[[], Any] | None = None, history: StepHistory | None = None) -> None:
    """Report metrics from every worker; with ``save``, every rank first runs ``gather()`` (FSDP's collectives),
    then rank 0 attaches a checkpoint written by ``save(folder, gathered)``, with its step ``history``."""
    import ray.train
    from ray.train import Checkpoint

    gathered = gather() if save is not None and gather is not None else None
    if save is not None and ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as tmp:
            save(tmp, gathered)
            if history is not None:
                history.save(tmp)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics, checkpoint=None)


def fit(loop: Callable[[dict], None], loop_config: dict[str, Any], workers: TrainWorkers, storage: str, name: str,
        datasets: dict[str, Any], max_failures: int):
    """Run ``loop`` on DDP workers (gloo on CPU, NCCL on GPU); raise the training error if any."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer


    n = max(1, workers.num_workers)
    cpus = cores_per_worker(workers.cpus_per_worker, n, is_embedded())
    trainer = TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=n, use_gpu=workers.use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=storage, failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets=datasets)
    result = trainer.fit()
    if result.error:
        raise result.error
    return result


def phases(clock, metrics: dict[str, Any]) -> dict[str, float | None]:
    """A training stage's phases for its manifest: the clock's, and inside ``train`` the worker's start-up
    (``setup_s``) and its loop (the efficiency block's ``compute_s``); the rest of ``train`` is Ray Train's."""
    return {**clock.seconds, "train_worker_setup": metrics.get("setup_s"),
            "train_loop": (metrics.get("efficiency") or {}).get("compute_s")}


def copy_model_files(src: str, dst: str) -> None:
    """A checkpoint folder's model files (not the trainer state or the step history) into ``dst``."""
    for f in os.listdir(src):
        if f not in NOT_MODEL_FILES:
            shutil.copy2(os.path.join(src, f), os.path.join(dst, f))


def export_checkpoint(run, checkpoint, stage: str, transform: Callable[[str, str], None] | None = None) -> None:
    """Copy the final checkpoint (minus trainer state) into the stage folder as a plain HF folder.

    ``transform(src, dst)`` replaces the plain copy (e.g. merging a LoRA adapter). Remote run
    directories get the folder uploaded, file by file in pieces, from a local temporary folder.
    """
    with checkpoint.as_directory() as ckpt:
        if run.is_local:
            os.makedirs(run.path(stage), exist_ok=True)
            (transform or copy_model_files)(ckpt, run.path(stage))
            return
        with tempfile.TemporaryDirectory(prefix="kard-export-") as target:
            (transform or copy_model_files)(ckpt, target)
            for f in os.listdir(target):
                upload_file(os.path.join(target, f), run.uri_of(stage, f))


def export_checkpoint_on_ray(run, checkpoint, stage: str, transform: Callable[[str, str], None] | None,
                             workers: TrainWorkers) -> None:
    """:func:`export_checkpoint` in a Ray task with one training worker's resources: merging a LoRA adapter loads
    the whole base model (an 8B student's memory, or its GPU), which is no job for the driver on the head node."""
    import ray


    options = {"num_cpus": cores_per_worker(workers.cpus_per_worker, 1, is_embedded()),
               "num_gpus": 1 if workers.use_gpu else 0}
    ray.get(ray.remote(export_checkpoint).options(**options).remote(run, checkpoint, stage, transform))


def freeze_below_top(model, n_layers: int, heads: tuple[str, ...] = ()) -> int:
    """Train only the last ``n_layers`` blocks of each block stack (:func:`block_stacks`), the final norms and
    the modules named in ``heads`` (a cross-encoder's new ``classifier``).

    Returns the number of trainable parameters. Backward stops at the lowest trainable block, which is
    what makes it cheap. Used by the student and the reranker (``train_layers``).
    """
    stacks = block_stacks(model)
    if not stacks:
        raise ValueError("train_layers: the model has no block stack (ModuleList) to train the top of")
    for p in model.parameters():
        p.requires_grad_(False)
    for block in (b for blocks in stacks for b in list(blocks)[-n_layers:]):
        for p in block.parameters():
            p.requires_grad_(True)
    in_stacks = {id(m) for blocks in stacks for m in blocks.modules()}
    for name, module in model.named_modules():
        in_blocks = id(module) in in_stacks
        if (name.endswith("norm") and not in_blocks) or name.split(".")[-1] in heads:
            for p in module.parameters():
                p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
