"""Student training: padding share with and without length grouping, the target-only LM head, and
tokens/s for 1 and 2 workers.

    python benchmarks/student.py --run-dir runs/demo [--loss-window 4] [--train-steps 10]

Padding is computed from the real tokenized training examples of each method (prompts packed to
``student.max_input_length``), batched by the same code the Ray Train loop uses. With
``--train-steps`` it also trains the KARD student that many steps with 1 worker x 2 CPUs and with
2 workers x 1 CPU (same global batch) and reports tokens/s from the stage manifests. ``--loss-window N``
times N real length-grouped batches of each method, forward + backward as the training loop runs them
(top ``train_layers`` blocks trainable), with HF's loss over every position's logits and with
``student_loss`` (logits from the batch's first target on), interleaved in one process. Last line:
one JSON object.
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
    args = p.parse_args()
    shares, examples = padding(args.run_dir, args.config)
    result = {"benchmark": "student", **cpu_info(), "padding": shares}
    if args.loss_window:
        result["loss_window"] = loss_window(args.config, examples, args.loss_window)
    if args.train_steps:
        result["tokens_per_s"] = throughput(args.run_dir, args.config, args.train_steps)
    emit(result)


if __name__ == "__main__":
    main()
