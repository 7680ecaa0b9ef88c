"""Student training: padding share with and without length grouping, and tokens/s for 1 and 2 workers.

    python benchmarks/student.py --run-dir runs/demo [--train-steps 10]

Padding is computed from the real tokenized training examples of each method (prompts packed to
``student.max_input_length``), batched by the same code the Ray Train loop uses. With
``--train-steps`` it also trains the KARD student that many steps with 1 worker x 2 CPUs and with
2 workers x 1 CPU (same global batch) and reports tokens/s from the stage manifests. Last line:
one JSON object.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import emit


def padding(run_dir: str, config: str) -> dict:
    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.stages import train_student
    from kard_ray.student.batching import length_grouped_batches, padding_share
    from kard_ray.student.formats import build_prompt, target_text
    from kard_ray.student.model import load_student_tokenizer, tokenize_example

    cfg = load_config(config, [f"run_dir={run_dir}"])
    s = cfg.student
    run = RunDir(run_dir)
    tokenizer = load_student_tokenizer(s.model, s.family)
    out = {}
    for method in ("kard", "rd", "ft"):
        rows = train_student.training_rows(run, s, method)
        lengths = []
        for r in rows:
            prompt = build_prompt(tokenizer, method, r["question"], r["options"], r["passages"], s.max_input_length)
            t = tokenize_example(tokenizer, prompt.text, target_text(method, r["rationale"], r["options"], r["answer"]),
                                 s.max_input_length, s.max_target_length)
            lengths.append(len(t.prompt) + len(t.target))
        lengths = np.asarray(lengths)
        shares = {}
        for grouped in (True, False):
            batches = length_grouped_batches(lengths, s.batch_size, np.random.default_rng(0), group=grouped)
            shares["grouped" if grouped else "random"] = round(padding_share(lengths, batches), 4)
        out[method] = {"examples": int(lengths.size), "mean_tokens": round(float(lengths.mean()), 1),
                       "padding_share": shares}
        print(method, out[method], flush=True)
    return out


def throughput(run_dir: str, config: str, steps: int) -> dict:
    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.runtime import init_ray
    from kard_ray.stages import train_student

    out = {}
    for workers, cpus in ((1, 2), (2, 1)):
        cfg = load_config(config, [f"run_dir={run_dir}", f"student.max_steps={steps}", f"student.seed={workers}",
                                   f"student.workers.num_workers={workers}", f"student.workers.cpus_per_worker={cpus}",
                                   f"student.batch_size={8 // workers}"])
        init_ray(cfg.ray)
        m = train_student.run(cfg, RunDir(run_dir), force=True, method="kard", log=lambda _m: None)
        out[f"{workers}x{cpus}cpu"] = round(m["extra"]["tokens_per_s"], 1)
        print(workers, "workers:", out[f"{workers}x{cpus}cpu"], "tokens/s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--train-steps", type=int, default=0)
    args = p.parse_args()
    result = {"benchmark": "student", "padding": padding(args.run_dir, args.config)}
    if args.train_steps:
        result["tokens_per_s"] = throughput(args.run_dir, args.config, args.train_steps)
    emit(result)


if __name__ == "__main__":
    main()
