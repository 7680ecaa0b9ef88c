"""Evaluation's generation: HF ``generate`` against ``greedy_decode`` (finished answers leave the batch),
and the batch size, on a run's real KARD prompts.

    python benchmarks/generation.py --run-dir runs/demo [--prompts 120] [--rounds 2]

Builds the KARD student's prompts of the run's evaluation (its test questions with the passages its
``evaluate`` stage used), then times, interleaved for ``--rounds`` rounds in one process: HF greedy
``generate`` with the answer-line stop at batch 30 (the old path), ``greedy_decode`` at batch 30, 60 and
120. It checks that the two decoders write the same answers. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_info, emit  # noqa: E402


def kard_prompts(run_dir: str, tokenizer, n: int, max_length: int) -> list[str]:
    """The KARD prompts the run's evaluation generated from (BM25 and reranked passages), first ``n``."""
    import pyarrow.parquet as pq

    from kard_ray.run_readers import open_passages
    from kard_ray.student.formats import build_prompt

    options = {r["id"]: r["options"] for r in pq.read_table(f"{run_dir}/data/test.parquet").to_pylist()}
    store = open_passages(run_dir)
    rows = [r for r in pq.read_table(f"{run_dir}/evaluate/predictions.parquet").to_pylist()
            if r["method"] in ("kard_bm25", "kard_reranker")][:n]
    return [build_prompt(tokenizer, "kard", r["question"], options[r["qid"]], store.texts(r["passage_rows"]),
                         max_length).text for r in rows]


def hf_generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The previous path: ``generate`` keeps every row until the batch's last answer line is complete."""
    import torch
    from transformers import StoppingCriteriaList

    from kard_ray.student.generate import AnswerLineStop

    enc = tokenizer(prompts, padding=True, return_tensors="pt")
    enc.pop("token_type_ids", None)
    width = enc["input_ids"].shape[1]
    stop = AnswerLineStop(tokenizer, width, [max_new_tokens] * len(prompts))
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([stop]))
    return [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


def timed(fn, prompts: list[str], batch: int) -> tuple[float, list[str]]:
    t0, out = time.perf_counter(), []
    for i in range(0, len(prompts), batch):
        out += fn(prompts[i:i + batch])
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--prompts", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch

    from kard_ray.config import load_config
    from kard_ray.runtime import machine_cores
    from kard_ray.student.generate import generate_texts
    from kard_ray.student.model import load_trained

    torch.set_num_threads(machine_cores())
    cfg = load_config(f"{args.run_dir}/config.resolved.yaml")
    tokenizer, model, family = load_trained(f"{args.run_dir}/student_kard")
    tokenizer.padding_side = "left"
    prompts = kard_prompts(args.run_dir, tokenizer, args.prompts, cfg.student.max_input_length)
    limit = cfg.eval.max_new_tokens
    ways = {"generate_b30": (lambda p: hf_generate(model, tokenizer, p, limit), 30)}
    for b in (30, 60, 120):
        ways[f"greedy_decode_b{b}"] = (lambda p: [t[0] for t in generate_texts(model, tokenizer, family, p, limit)], b)
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    answers: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, (fn, batch) in ways.items():
            s, answers[name] = timed(fn, prompts, batch)
            seconds[name].append(round(s, 2))
            print(f"{name}: {s:.1f} s", file=sys.stderr, flush=True)
    base = min(seconds["generate_b30"])
    same = sum(a == b for a, b in zip(answers["generate_b30"], answers["greedy_decode_b30"]))
    emit({"cpu": cpu_info(), "prompts": len(prompts), "max_new_tokens": limit, "seconds": seconds,
          "speedup_vs_generate_b30": {k: round(base / min(v), 3) for k, v in seconds.items()},
          "same_answers_b30": f"{same}/{len(prompts)}"})


if __name__ == "__main__":
    main()
