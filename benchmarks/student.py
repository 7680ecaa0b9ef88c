"""Student training: padding share with and without length grouping, the target-only LM head, and
tokens/s for 1 and 2 workers.

    python benchmarks/student.py --run-dir runs/demo [--loss-window 4] [--train-steps 10] [--loops 20]

Padding is computed from the real tokenized training examples of each method (prompts packed to
``student.max_input_length``), batched by the same code the Ray Train loop uses. With
``--train-steps`` it also trains the KARD student that many steps with 1 worker x 2 CPUs and with
2 workers x 1 CPU (same global batch) and reports tokens/s from the stage manifests. ``--loss-window N``
times N real length-grouped batches of each method, forward + backward as the training loop runs them
(top ``train_layers`` blocks trainable), with HF's loss over every position's logits and with
``student_loss`` (logits from the batch's first target on), interleaved in one process. ``--loops N``
trains the KARD student N steps in one process twice, from the same weights on the same examples: with the
project's training loop (``epoch_batches``, ``student_loss``, ``clipped_step``) and with HF ``Trainer``
(``group_by_length``, its own loss), and reports examples/s and the loss of each. Last line: one JSON object.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import cpu_info, emit


def padding(run_dir: str, config: str) -> tuple[dict, dict]:
    """Padding shares per method, and the tokenized training examples and their length-grouped batches."""
    from kard_ray.artifacts import RunDir
    from kard_ray.batching import length_grouped_batches, padding_share
    from kard_ray.config import load_config
    from kard_ray.stages.student import training_rows
    from kard_ray.student.model import load_student_tokenizer
    from kard_ray.student.train import tokenize_rows

    cfg = load_config(config, [f"run_dir={run_dir}"])
    s = cfg.student
    run = RunDir(run_dir)
    tokenizer = load_student_tokenizer(s.model, s.family)
    out, examples = {}, {}
    for method in ("kard", "rd", "ft"):
        rows = training_rows(run, s, method)
        tokens = tokenize_rows(rows, tokenizer, s, method)[0]  # as each training worker tokenizes its shard
        lengths = np.asarray([len(t.prompt) + len(t.target) for t in tokens])
        batches = length_grouped_batches(lengths, s.batch_size, np.random.default_rng(0))
        examples[method] = [[tokens[i] for i in b] for b in batches]
        shares = {}
        for grouped in (True, False):
            batches = length_grouped_batches(lengths, s.batch_size, np.random.default_rng(0), group=grouped)
            shares["grouped" if grouped else "random"] = round(padding_share(lengths, batches), 4)
        out[method] = {"examples": int(lengths.size), "mean_tokens": round(float(lengths.mean()), 1),
                       "padding_share": shares}
        print(method, out[method], flush=True)
    return out, examples


def loss_window(config: str, examples: dict, n_batches: int, repeats: int = 2) -> dict:
    """Seconds per forward + backward of real batches: HF's loss (every position projected to the
    vocabulary) against ``student_loss`` (from the batch's first target on); best of ``repeats``,
    alternating which goes first, and the largest loss difference between the two."""
    import time

    from kard_ray.config import load_config
    from kard_ray.student.model import collate, load_student, student_loss
    from kard_ray.training import freeze_below_top

    s = load_config(config).student
    tokenizer, model = load_student(s.model, s.family)
    freeze_below_top(model, s.train_layers)
    model.train()
    variants = {"full": lambda inputs: model(**inputs).loss, "target_only": lambda inputs: student_loss(model, inputs)}
    out = {}
    for method, batches in examples.items():
        picked = [batches[i] for i in np.linspace(0, len(batches) - 1, n_batches).astype(int)]
        best, gap = {name: 0.0 for name in variants}, 0.0
        for inputs in (collate(b, s.family, tokenizer.pad_token_id)[0] for b in picked):
            times: dict = {name: [] for name in variants}
            losses = {}
            for r in range(repeats):
                for name in list(variants)[:: 1 if r % 2 == 0 else -1]:
                    t = time.perf_counter()
                    loss = variants[name](inputs)
                    loss.backward()
                    times[name].append(time.perf_counter() - t)
                    model.zero_grad(set_to_none=True)
                    losses[name] = loss.item()
            gap = max(gap, abs(losses["full"] - losses["target_only"]))
            for name in variants:
                best[name] += min(times[name])
        out[method] = {"s_per_batch": {k: round(v / n_batches, 3) for k, v in best.items()},
                       "speedup": round(best["full"] / best["target_only"], 3), "max_loss_diff": gap}
        print(method, out[method], flush=True)
    return out


def loops(config: str, run_dir: str, steps: int) -> dict:
    """The project's training loop against HF Trainer: same model, examples, batch size, schedule and clipping."""
    import tempfile
    import time

    import torch
    from transformers import Trainer, TrainingArguments, get_linear_schedule_with_warmup

    from kard_ray.artifacts import RunDir
    from kard_ray.batching import epoch_batches
    from kard_ray.config import load_config
    from kard_ray.devices import clipped_step
    from kard_ray.stages.student import training_rows
    from kard_ray.student.model import Tokens, collate, load_student, student_loss
    from kard_ray.student.train import tokenize_rows
    from kard_ray.training import freeze_below_top

    s = load_config(config, [f"run_dir={run_dir}"]).student
    out = {}

    def fresh():
        torch.manual_seed(s.seed)
        tokenizer, model = load_student(s.model, s.family)
        freeze_below_top(model, s.train_layers)
        return tokenizer, model.train()

    tokenizer, model = fresh()
    examples = tokenize_rows(training_rows(RunDir(run_dir), s, "kard"), tokenizer, s, "kard")[0]
    lengths = [len(e.prompt) + len(e.target) for e in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(s.warmup_ratio * steps), steps)
    losses, t0 = [], time.perf_counter()
    for batch in epoch_batches(0, 0, s.seed, s.batch_size, steps, lengths=lengths):
        inputs = collate([examples[i] for i in batch], s.family, tokenizer.pad_token_id)[0]
        loss = student_loss(model, inputs)
        loss.backward()
        clipped_step(optimizer, None, params)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    out["kard_loop"] = {"examples_per_s": round(steps * s.batch_size / seconds, 2),
                        "loss_last5": round(float(np.mean(losses[-5:])), 4)}
    print("kard loop", out["kard_loop"], flush=True)

    tokenizer, model = fresh()
    items = [{"input_ids": e.prompt + e.target, "prompt": e.prompt, "target": e.target} for e in examples]

    def collator(batch):
        return collate([Tokens(b["prompt"], b["target"]) for b in batch], s.family, tokenizer.pad_token_id)[0]

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=s.batch_size, max_steps=steps,
                                 learning_rate=s.lr, warmup_steps=int(s.warmup_ratio * steps), weight_decay=0.0,
                                 max_grad_norm=1.0, train_sampling_strategy="group_by_length", logging_steps=1,
                                 report_to=[], save_strategy="no", use_cpu=True, seed=s.seed,
                                 remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=items, data_collator=collator)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out["hf_trainer"] = {"examples_per_s": round(steps * s.batch_size / seconds, 2),
                         "loss_last5": round(float(np.mean(logged[-5:])), 4)}
    print("HF Trainer", out["hf_trainer"], flush=True)
    out["speedup"] = round(out["kard_loop"]["examples_per_s"] / out["hf_trainer"]["examples_per_s"], 3)
    return out


def throughput(run_dir: str, config: str, steps: int) -> dict:
    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.pipeline import run_one
    from kard_ray.registry import student_stage
    from kard_ray.runtime import init_ray

    out = {}
    for workers, cpus in ((1, 2), (2, 1)):
        cfg = load_config(config, [f"run_dir={run_dir}", f"student.max_steps={steps}", f"student.seed={workers}",
                                   f"student.workers.num_workers={workers}", f"student.workers.cpus_per_worker={cpus}",
                                   f"student.batch_size={8 // workers}"])
        init_ray(cfg.ray)
        m = run_one(student_stage("kard"), cfg, RunDir(run_dir), force=True, log=lambda _m: None)
        out[f"{workers}x{cpus}cpu"] = round(m["extra"]["tokens_per_s"], 1)
        print(workers, "workers:", out[f"{workers}x{cpus}cpu"], "tokens/s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--train-steps", type=int, default=0)
    p.add_argument("--loss-window", type=int, default=0, metavar="N", help="time N batches per method (0: skip)")
    p.add_argument("--loops", type=int, default=0, metavar="N",
                   help="N steps with the project's loop and with HF Trainer, one process (0: skip)")
    args = p.parse_args()
    shares, examples = padding(args.run_dir, args.config)
    result = {"benchmark": "student", **cpu_info(), "padding": shares}
    if args.loss_window:
        result["loss_window"] = loss_window(args.config, examples, args.loss_window)
    if args.loops:
        result["loops"] = loops(args.config, args.run_dir, args.loops)
    if args.train_steps:
        result["tokens_per_s"] = throughput(args.run_dir, args.config, args.train_steps)
    emit(result)


if __name__ == "__main__":
    main()
