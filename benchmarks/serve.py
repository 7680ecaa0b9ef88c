"""Serve benchmark: closed-loop load on the local answer service, dynamic batching on vs off, autoscaling.

    python benchmarks/serve.py --run-dir runs/demo [--requests 48] [--concurrency 1 8 32]

For each concurrency C, C client threads each send requests back to back (closed loop) until the
total is reached; QPS and p50/p95/p99 latency come from the completed requests. The app runs twice:
``max_batch_size`` 16 (batched) and 1 (unbatched). Then an autoscaling run (1..2 replicas) records
replica counts under load and after it. Status codes are counted: the target is zero 5xx.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from common import emit

# this file is named serve.py, like the repository's serve/ package: import that package, not this file
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(url: str, body: dict) -> tuple[int, float]:
    t = time.perf_counter()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.perf_counter() - t


def closed_loop(url: str, bodies: list[dict], concurrency: int, total: int) -> dict:
    lock, latencies, statuses, sent = threading.Lock(), [], Counter(), [0]

    def worker() -> None:
        while True:
            with lock:
                if sent[0] >= total:
                    return
                i = sent[0]
                sent[0] += 1
            status, seconds = one_request(url, bodies[i % len(bodies)])
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(seconds)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": total, "qps": round(len(latencies) / wall, 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            "statuses": dict(statuses)}


def replica_counts(app: str) -> dict[str, int]:
    from ray import serve

    status = serve.status().applications[app]
    return {name: sum(d.replica_states.values()) for name, d in status.deployments.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override the run's eval.max_new_tokens")
    p.add_argument("--skip-autoscaling", action="store_true")
    p.add_argument("--hops", type=int, default=None, help="retrieve-and-rerank rounds (default: as trained)")
    args = p.parse_args()
    overrides = {k: v for k, v in (("hops", args.hops), ("max_new_tokens", args.max_new_tokens)) if v is not None}

    from ray import serve

    from kard_ray.artifacts import RunDir
    from kard_ray.config import RayConfig
    from kard_ray.runtime import init_ray
    from kard_ray.stages.data import read_split
    from serve.app import Autoscaling, ServeAppArgs, build_app

    run = RunDir(args.run_dir)
    questions = read_split(run, "test")
    bodies = [{"question": q.question, "options": q.options, "return_passages": False} for q in questions]
    init_ray(RayConfig(num_cpus=8))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/v1/answer"
    results: dict[str, list[dict]] = {}
    try:
        for label, batch in (("batched", 16), ("unbatched", 1)):
            serve.run(build_app(ServeAppArgs(run_dir=args.run_dir, max_batch_size=batch, batch_wait_ms=20,
                                             overrides=overrides,
                                             max_ongoing_requests=64, max_queued_requests=256,
                                             request_timeout_s=600)),
                      name="kard", route_prefix="/")
            closed_loop(url, bodies, 2, 4)  # warm-up
            results[label] = []
            for c in args.concurrency:
                r = closed_loop(url, bodies, c, max(args.requests, c))
                print(label, json.dumps(r), flush=True)
                results[label].append(r)
            serve.delete("kard")
        scaling = None
        if not args.skip_autoscaling:
            auto = Autoscaling(min_replicas=1, max_replicas=2, target_ongoing_requests=2, upscale_delay_s=2,
                               downscale_delay_s=5)
            serve.run(build_app(ServeAppArgs(run_dir=args.run_dir, max_batch_size=4, overrides=overrides,
                                             reranker_autoscaling=auto, generator_autoscaling=auto,
                                             model_cpus=0.5, request_timeout_s=600)), name="kard", route_prefix="/")
            before = replica_counts("kard")
            load = threading.Thread(target=closed_loop, args=(url, bodies, 16, 64))
            load.start()
            peak = dict(before)
            while load.is_alive():
                now = replica_counts("kard")
                peak = {k: max(peak.get(k, 0), v) for k, v in now.items()}
                time.sleep(0.5)
            deadline = time.time() + 60
            after = replica_counts("kard")
            while time.time() < deadline and any(after[k] > before[k] for k in after):
                time.sleep(1)
                after = replica_counts("kard")
            scaling = {"before": before, "peak_under_load": peak, "after_idle": after}
            print("autoscaling", json.dumps(scaling), flush=True)
    finally:
        serve.shutdown()
    top = {r["concurrency"]: r for r in results["batched"]}
    low = {r["concurrency"]: r for r in results["unbatched"]}
    c = max(args.concurrency)
    fivexx = sum(n for rs in results.values() for r in rs for s, n in r["statuses"].items() if s >= 500)
    emit({"benchmark": "serve", "concurrency": c, "qps_batched": top[c]["qps"], "qps_unbatched": low[c]["qps"],
          "batching_gain": round(top[c]["qps"] / low[c]["qps"], 2) if low[c]["qps"] else None,
          "p50_ms": top[c]["p50_ms"], "p95_ms": top[c]["p95_ms"], "p99_ms": top[c]["p99_ms"],
          "responses_5xx": fivexx, "levels": results, "autoscaling": scaling})


if __name__ == "__main__":
    main()
