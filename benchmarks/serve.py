"""Serve benchmark: the answer service on a finished run, old path against new, batching on and off.

    python benchmarks/serve.py --run-dir runs/demo [--requests 48] [--concurrency 1 32] [--autoscaling]

For each concurrency C, C client threads each send requests back to back (closed loop) until the
total is reached; QPS and p50/p95/p99 latency come from the completed requests, the rerank step's p50
from the responses' ``timings_ms``. Three apps run in turn on the same run directory:
- ``old``: the path before stored vectors and answer-line stopping (every candidate re-encoded by the
  bi-encoder, generation to ``max_new_tokens``), batched;
- ``new``: stored passage vectors, generation stops at the answer line, batched (``max_batch_size`` 16);
- ``new_unbatched``: the new path with ``max_batch_size`` 1 (the batching gain's baseline).
``--autoscaling`` adds a 1..2-replica run that records replica counts under load and after it. Status
codes are counted: the target is zero 5xx. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from common import cpu_info, emit, serve_on_loopback

# this file is named serve.py, like the repository's serve/ package: import that package, not this file
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def one_request(url: str, body: dict) -> tuple[int, float, dict]:
    t = time.perf_counter()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            payload = json.loads(resp.read())
            status = resp.status
    except urllib.error.HTTPError as err:
        status, payload = err.code, {}
    return status, time.perf_counter() - t, payload.get("timings_ms", {})


def closed_loop(url: str, bodies: list[dict], concurrency: int, total: int) -> dict:
    lock, latencies, statuses, sent, rerank = threading.Lock(), [], Counter(), [0], []

    def worker() -> None:
        while True:
            with lock:
                if sent[0] >= total:
                    return
                i = sent[0]
                sent[0] += 1
            status, seconds, timings = one_request(url, bodies[i % len(bodies)])
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(seconds)
                    rerank.append(timings.get("rerank", 0.0))

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
            "rerank_p50_ms": round(float(np.percentile(rerank, 50)), 1) if rerank else None,
            "statuses": dict(statuses)}


def replica_counts(app: str) -> dict[str, int]:
    from ray import serve

    status = serve.status().applications[app]
    return {name: sum(d.replica_states.values()) for name, d in status.deployments.items()}


APPS = {  # name -> (ServeAppArgs fields beyond the run dir)
    "old": {"use_passage_vectors": False, "overrides": {"stop_at_answer_line": False}},
    "new": {},
    "new_unbatched": {"max_batch_size": 1},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level (c1: a third)")
    p.add_argument("--autoscaling", action="store_true", help="also measure replica autoscaling under load")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                   help="ServeAppArgs fields for every app, e.g. batch_wait_ms=20 model_threads=2")
    args = p.parse_args()

    from ray import serve

    from serve.app import ServeAppArgs, build_app

    common = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    print(json.dumps({**cpu_info(), "set": common}), flush=True)
    url, bodies = serve_on_loopback(args.run_dir)
    results: dict[str, dict[int, dict]] = {}
    scaling = None
    try:
        for label, extra in APPS.items():
            fields = {"max_ongoing_requests": 64, "max_queued_requests": 256, "request_timeout_s": 600,
                      **common, **extra}
            serve.run(build_app(ServeAppArgs(run_dir=args.run_dir, **fields)),
                      name="kard", route_prefix="/")
            closed_loop(url, bodies, 2, 4)  # warm-up
            results[label] = {}
            for c in args.concurrency:
                r = closed_loop(url, bodies, c, max(args.requests // 3 if c == 1 else args.requests, c))
                print(label, json.dumps(r), flush=True)
                results[label][c] = r
            serve.delete("kard")
        if args.autoscaling:
            scaling = autoscaling_run(url, bodies, args.run_dir)
    finally:
        serve.shutdown()
    c = max(args.concurrency)
    new, old, unbatched = results["new"], results["old"], results["new_unbatched"]
    fivexx = sum(n for levels in results.values() for r in levels.values() for s, n in r["statuses"].items()
                 if s >= 500)
    emit({"benchmark": "serve", **cpu_info(), "set": common,
          "p50_ms_c1": new[1]["p50_ms"], "p50_ms_c1_old": old[1]["p50_ms"],
          "rerank_p50_ms_c1": new[1]["rerank_p50_ms"], "rerank_p50_ms_c1_old": old[1]["rerank_p50_ms"],
          f"qps_c{c}": new[c]["qps"], f"qps_c{c}_old": old[c]["qps"],
          "batching_gain": round(new[c]["qps"] / unbatched[c]["qps"], 2) if unbatched[c]["qps"] else None,
          "errors_5xx": fivexx, "levels": results, "autoscaling": scaling})


def autoscaling_run(url: str, bodies: list[dict], run_dir: str) -> dict:
    """Replica counts of an autoscaled app (1..2 replicas) before, under and after a c16 load."""
    from ray import serve

    from serve.app import Autoscaling, ServeAppArgs, build_app

    auto = Autoscaling(min_replicas=1, max_replicas=2, target_ongoing_requests=2, upscale_delay_s=2,
                       downscale_delay_s=5)
    serve.run(build_app(ServeAppArgs(run_dir=run_dir, max_batch_size=4, reranker_autoscaling=auto,
                                     generator_autoscaling=auto, model_cpus=0.5, request_timeout_s=600)),
              name="kard", route_prefix="/")
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
    return scaling


if __name__ == "__main__":
    main()
