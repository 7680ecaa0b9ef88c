"""Stages side by side or one after another: does splitting the cores between two trainings get more done?

    python benchmarks/stage_lanes.py [--steps 6] [--lanes 2]

Times real KARD-student training steps (SmolLM2-135M, top ``train_layers`` blocks trainable, batch of the
demo's shape: 8 x 134 tokens) in one process with every core, then in ``--lanes`` processes at once with an
equal share of the cores each (started together; model loads differ by a second or two, so a lane may run
alone briefly, which can only flatter the lanes). The ratio decides ``concurrent_stages``' default
(``kard_ray.runtime``): lanes pay off only where ``lanes_speedup`` > 1. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_info, emit  # noqa: E402


def steps_per_s(threads: int, steps: int) -> float:
    """Training steps per second of one student process with ``threads`` torch threads (after one warm-up step)."""
    import torch

    from kard_ray.config import StudentConfig
    from kard_ray.student.model import Tokens, collate, load_student, student_loss
    from kard_ray.training import freeze_below_top

    torch.set_num_threads(threads)
    cfg = StudentConfig(train_layers=8)
    tokenizer, model = load_student(cfg.model, cfg.family)
    freeze_below_top(model, cfg.train_layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    batch = [Tokens(list(range(100, 204)), list(range(300, 330))) for _ in range(cfg.batch_size)]
    inputs, _, _ = collate(batch, cfg.family, tokenizer.pad_token_id)
    model.train()
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        student_loss(model, inputs).backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # threads of one child process
    args = parser.parse_args()
    if args.worker:
        print(steps_per_s(args.worker, args.steps), flush=True)
        return
    from kard_ray.runtime import machine_cores

    cores = machine_cores()
    one = steps_per_s(cores, args.steps)
    share = max(1, cores // args.lanes)
    children = [subprocess.Popen([sys.executable, __file__, "--worker", str(share), "--steps", str(args.steps)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(args.lanes)]
    rates = []
    for child in children:
        out, err = child.communicate()
        if child.returncode:
            raise SystemExit(f"a lane failed:\n{err[-2000:]}")
        rates.append(float(out.strip().splitlines()[-1]))
    result = {"cpu": cpu_info(), "cores": cores, "lanes": args.lanes, "threads_per_lane": share,
              "steps_per_s_one_process": round(one, 4), "steps_per_s_per_lane": [round(r, 4) for r in rates],
              "lanes_speedup": round(sum(rates) / one, 3)}
    emit(result)


if __name__ == "__main__":
    main()
