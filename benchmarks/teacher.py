"""Teacher throughput and rate limiting: the real rationales stage against the reference teacher.

    python benchmarks/teacher.py --latency-ms 200 --concurrency 32 --requests 640

Phase 1 (throughput): ``--requests`` questions, one sample each, no rate limit; the ideal is
concurrency / latency requests per second. ``achieved_rps`` is measured by the server from the
first request's arrival to the last response (the steady state); ``wall_rps`` also counts Ray
start-up of the actor pool. Phase 2 (rate limit): the same work under a limit of half the ideal
rate; ``observed_peak_rpm`` is the highest arrival rate over any 5-second window, per minute
(``observed_peak_rpm_2s_window`` the same over 2 seconds, which also shows scheduling jitter).
The server counts billed requests per request key, so ``duplicate_requests`` shows any prompt
paid twice. The last line is one JSON object.

    python benchmarks/teacher.py --mode batch [--config configs/demo.yaml] [--batch-delay-s 1] [--poll-s 1]

Batch mode: the questions of ``--config`` (the demo's: train and test, ``teacher.n``) through the
Batch API of a reference teacher process with a completion delay of ``--batch-delay-s``; reports the
stage's wall time, the API calls the client made (files, batches, polls) and what the server billed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

from kard_ray.artifacts import RunDir  # noqa: E402
from kard_ray.config import load_config  # noqa: E402
from kard_ray.pipeline import run_one  # noqa: E402
from kard_ray.runtime import init_ray  # noqa: E402
from kard_ray.teacher.reference_server import ReferenceTeacherProcess, ServerOptions  # noqa: E402


def run_phase(tmp: str, name: str, world: str, args, rpm: float | None) -> dict:
    """One rationales-stage run on a fresh cache against a fresh server process."""
    sets = [f"run_dir={tmp}/{name}", f"data.train={world}/train.jsonl", f"data.limit={args.requests}",
            "teacher.n=1", "teacher.model=kard-reference-teacher", f"teacher.concurrency={args.concurrency}",
            f"teacher.actors={args.actors}", f"teacher.batch_size={args.batch_size}", "teacher.timeout_s=30"]
    if rpm:
        sets.append(f"teacher.requests_per_minute={rpm}")
    cfg = load_config(None, sets)
    run = RunDir(cfg.run_dir)
    run_one("data", cfg, run, log=lambda m: None)
    with ReferenceTeacherProcess(world, ServerOptions(latency_ms=args.latency_ms)) as server:
        cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"base_url": server.base_url})})
        t0 = time.perf_counter()
        m = run_one("rationales", cfg, run, log=lambda m: None)
        wall = time.perf_counter() - t0
        stats = server.stats()
        stats["peak_rpm_2s"] = server.stats(window_s=2.0)["peak_rpm"]
        stats["peak_rpm_5s"] = server.stats(window_s=5.0)["peak_rpm"]
    busy = stats["last_done"] - stats["first_arrival"]
    return {"wall_s": wall, "busy_s": busy, "stats": stats, "manifest": m}


def run_batch(args) -> dict:
    """The rationales stage in batch mode over the config's questions, against a reference teacher process."""
    from kard_ray.registry import output

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"run_dir={tmp}/run", "teacher.mode=batch",
                                        f"teacher.batch_poll_s={args.poll_s}"])
        run = RunDir(cfg.run_dir)
        run_one("data", cfg, run, log=lambda m: None)
        world = run.path(output("data", "world"))
        with ReferenceTeacherProcess(world, ServerOptions(batch_delay_s=args.batch_delay_s)) as server:
            cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(
                update={"base_url": server.base_url, "reference": False})})
            t0 = time.perf_counter()
            m = run_one("rationales", cfg, run, log=lambda m: None)
            wall = time.perf_counter() - t0
            stats = server.stats()
    batch = m["extra"]["batch"]
    return {"mode": "batch", "config": args.config, "questions": m["counts"]["questions"], "n": cfg.teacher.n,
            "samples": m["counts"]["samples"], "failed_requests": m["counts"]["failed_requests"],
            "batch_delay_s": args.batch_delay_s, "poll_s": args.poll_s, "wall_s": round(wall, 2),
            "batches_created": stats["batches_created"], "requests_billed": stats["batch_requests_billed"],
            "duplicate_billed": stats["duplicate_billed"], "client_api_calls": batch["api_calls"],
            "client_api_calls_total": sum(batch["api_calls"].values()), "server_calls": stats["batch_calls"],
            "chat_requests": stats["requests"], "polls": batch["polls"],
            "cost_usd_batch": m["extra"]["cost_usd_this_run"],
            "cost_usd_online_same_tokens": round(m["extra"]["cost_usd_this_run"] / (1 - cfg.teacher.batch_discount), 4)
            if cfg.teacher.batch_discount < 1 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["online", "batch"], default="online",
                    help="online: throughput and rate limit phases; batch: one Batch API run of --config")
    ap.add_argument("--config", default="configs/demo.yaml", help="batch mode: the run's config (its questions)")
    ap.add_argument("--batch-delay-s", type=float, default=1.0, help="batch mode: the reference batch delay")
    ap.add_argument("--poll-s", type=float, default=1.0, help="batch mode: teacher.batch_poll_s")
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=160)
    ap.add_argument("--rate-limit-rpm", type=float, default=None, help="phase 2 limit (default: half the ideal)")
    args = ap.parse_args()
    if args.mode == "batch":
        emit(run_batch(args))
        return

    from kard_ray.config import SynthConfig
    from kard_ray.synth import generate_world, write_world

    ideal_rps = args.concurrency / (args.latency_ms / 1000)
    rpm = args.rate_limit_rpm or round(ideal_rps * 60 / 2)
    people = math.ceil(args.requests / 2)
    init_ray(load_config().ray)
    with tempfile.TemporaryDirectory() as tmp:
        world = str(write_world(generate_world(SynthConfig(train_people=people, dev_people=1, test_people=1)),
                                f"{tmp}/world"))
        fast = run_phase(tmp, "throughput", world, args, None)
        limited = run_phase(tmp, "rate-limited", world, args, rpm)
    served = fast["stats"]["billed_requests"]
    result = {
        "latency_ms": args.latency_ms, "concurrency": args.concurrency, "requests": args.requests,
        "ideal_rps": round(ideal_rps, 1),
        "achieved_rps": round(served / fast["busy_s"], 1),
        "efficiency": round(served / fast["busy_s"] / ideal_rps, 3),
        "wall_rps": round(served / fast["wall_s"], 1),
        "server_requests": fast["stats"]["requests"],
        "duplicate_requests": fast["stats"]["duplicate_billed"] + limited["stats"]["duplicate_billed"],
        "peak_in_flight": fast["stats"]["peak_in_flight"],
        "rate_limit_rpm": rpm,
        "observed_peak_rpm": round(limited["stats"]["peak_rpm_5s"], 1),
        "rate_limit_overshoot": round(limited["stats"]["peak_rpm_5s"] / rpm - 1, 4),
        "observed_peak_rpm_2s_window": round(limited["stats"]["peak_rpm_2s"], 1),
        "rate_limited_mean_rpm": round(limited["stats"]["billed_requests"] / limited["busy_s"] * 60, 1),
    }
    emit(result)


if __name__ == "__main__":
    main()
