"""Overload goodput: bursts of concurrent requests against the answer service with its default settings.

    python benchmarks/overload.py --run-dir runs/demo [--bursts 64 256] [--capacity-clients 16] [--direct-ingress]

1. Capacity: the endpoint's answer rate at saturation, from a closed loop of ``--capacity-clients`` clients
   (no request timeout, no admission control: nothing is refused, every answer counts).
2. For each app (the default ``kard serve`` settings, then the same without admission control), after 20 s of
   steady traffic (half the capacity clients), and each burst size B: B requests sent at once. Goodput is the
   answers returned within the request timeout divided by what the capacity answers over the same interval
   (burst start to its last answer); refusals are timed.

Targets (issue "Faults and load survived"): goodput >= 0.8 of capacity, refusals within 1 s (p99). The last line
is one JSON object.
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

# this folder has a serve.py: import the repository's serve/ package, not that file
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def send(url: str, body: dict, timeout_s: float) -> tuple[int, float, str | None]:
    """(status, seconds, Retry-After) of one request; a client timeout is status 0."""
    t = time.perf_counter()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
            return resp.status, time.perf_counter() - t, None
    except urllib.error.HTTPError as err:
        return err.code, time.perf_counter() - t, err.headers.get("Retry-After")
    except (TimeoutError, urllib.error.URLError):
        return 0, time.perf_counter() - t, None


def capacity(url: str, bodies: list[dict], clients: int, seconds: float) -> float:
    """Answers per second with ``clients`` closed-loop clients for about ``seconds``."""
    done, lock, stop = [], threading.Lock(), time.perf_counter() + seconds

    def client(i: int) -> None:
        j = i
        while time.perf_counter() < stop:
            status, _, _ = send(url, bodies[j % len(bodies)], 600)
            with lock:
                if status == 200:
                    done.append(time.perf_counter())
            j += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done) / (max(done) - t0) if done else 0.0


def burst(url: str, bodies: list[dict], size: int, timeout_s: float) -> dict:
    results: list[tuple[int, float, str | None]] = []
    lock, gate = threading.Lock(), threading.Barrier(size)

    def client(i: int) -> None:
        gate.wait()
        r = send(url, bodies[i % len(bodies)], timeout_s + 30)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(size)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = Counter(s for s, _, _ in results)
    answered = [sec for s, sec, _ in results if s == 200 and sec <= timeout_s]
    refused = np.asarray([sec for s, sec, _ in results if s == 503]) * 1000
    return {"burst": size, "statuses": dict(statuses), "answered_in_time": len(answered),
            "interval_s": round(max(answered) if answered else timeout_s, 2),
            "wall_s": round(time.perf_counter() - t0, 2),
            "refusal_p50_ms": round(float(np.percentile(refused, 50)), 1) if refused.size else None,
            "refusal_p99_ms": round(float(np.percentile(refused, 99)), 1) if refused.size else None,
            "retry_after": sorted({r for s, _, r in results if s == 503 and r}, key=float)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--bursts", type=int, nargs="+", default=[64, 256])
    p.add_argument("--capacity-clients", type=int, default=16)
    p.add_argument("--capacity-seconds", type=float, default=90)
    p.add_argument("--without-admission", action=argparse.BooleanOptionalAction, default=True,
                   help="also burst the app without admission control (the before)")
    p.add_argument("--direct-ingress", action="store_true",
                   help="no Serve proxy: the ingress replica serves HTTP itself (serve/direct_ingress.py)")
    args = p.parse_args()

    from ray import serve

    from serve.app import ServeAppArgs, build_app
    from serve.direct_ingress import serving_urls

    print(json.dumps(cpu_info()), flush=True)
    _, bodies = serve_on_loopback(args.run_dir, args.direct_ingress)
    default = ServeAppArgs(run_dir=args.run_dir)
    apps = {"no_admission_long_timeout": {"admission_control": False, "request_timeout_s": 600},
            "default": {}, **({"no_admission": {"admission_control": False}} if args.without_admission else {})}
    out: dict = {"timeout_s": default.request_timeout_s, "direct_ingress": args.direct_ingress}
    try:
        for label, fields in apps.items():
            serve.run(build_app(ServeAppArgs(run_dir=args.run_dir, **fields)), name="kard", route_prefix="/")
            url = serving_urls("kard", "127.0.0.1")[0] + "/v1/answer"  # under direct ingress, the replica's own port
            for i in range(2):  # warm-up: load the models, measure a lone request
                send(url, bodies[i], 600)
            if label != "no_admission_long_timeout":  # a service in use: steady traffic before the burst
                capacity(url, bodies, args.capacity_clients // 2, 20)
            if label == "no_admission_long_timeout":
                out["capacity_qps"] = round(capacity(url, bodies, args.capacity_clients, args.capacity_seconds), 3)
                print("capacity", out["capacity_qps"], "answers/s", flush=True)
            else:
                for size in args.bursts:
                    r = burst(url, bodies, size, default.request_timeout_s)
                    r["goodput_ratio"] = round(r["answered_in_time"] / (out["capacity_qps"] * r["interval_s"]), 3)
                    print(label, json.dumps(r), flush=True)
                    out.setdefault(label, []).append(r)
                    time.sleep(default.request_timeout_s)  # let what is still running drain
            serve.delete("kard")
    finally:
        serve.shutdown()
    runs = out.get("default", [])
    emit({"benchmark": "overload", **cpu_info(), **out,
          "overload_goodput_ratio": min((r["goodput_ratio"] for r in runs), default=None),
          "refusal_p99_ms": max((r["refusal_p99_ms"] or 0 for r in runs), default=None),
          "serve_5xx_other_than_503": sum(n for r in runs for s, n in r["statuses"].items()
                                          if s >= 500 and s != 503)})


if __name__ == "__main__":
    main()
