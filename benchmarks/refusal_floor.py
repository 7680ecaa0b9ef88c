"""The floor under the answer service's refusal latency: a burst refused by an app that does nothing else.

    python benchmarks/refusal_floor.py [--bursts 64 256] [--repeats 3]

The same FastAPI app, whose one route answers 503 + Retry-After at once, behind Ray Serve's HTTP proxy (an embedded
Ray, the app's one replica beside the proxy on this machine) and served by uvicorn directly in this process. Each
burst is ``benchmarks/overload.py``'s: B requests released together from B client threads. Whatever the answer
service adds (request validation, admission, metrics, models computing beside it) comes on top of the first figure,
so it bounds what ``refusal_p99_ms`` of ``overload.py`` and ``chaos.py`` can reach on a machine. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import threading
import time

from common import cpu_info, emit
from fastapi import FastAPI, HTTPException
from overload import burst
from ray import serve

api = FastAPI()


@api.post("/v1/answer")
async def refuse(body: dict) -> dict:
    raise HTTPException(503, "overloaded", headers={"Retry-After": "1"})


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Refuser:
    """``api`` as a Serve app: every request goes through the proxy to this replica."""


def bursts(url: str, sizes: list[int], repeats: int) -> list[dict]:
    """Each size ``repeats`` times; the statuses and refusal percentiles of every burst."""
    keep = ("burst", "statuses", "wall_s", "refusal_p50_ms", "refusal_p99_ms")
    return [{k: r[k] for k in keep} for size in sizes for r in (burst(url, [{}], size, 30) for _ in range(repeats))]


def behind_serve(port: int, sizes: list[int], repeats: int) -> list[dict]:
    import ray

    ray.init(address="local", num_cpus=4, object_store_memory=256 * 2**20, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Refuser.bind(), name="refuser", route_prefix="/")
        return bursts(f"http://127.0.0.1:{port}/v1/answer", sizes, repeats)
    finally:
        serve.shutdown()
        ray.shutdown()


def uvicorn_direct(port: int, sizes: list[int], repeats: int) -> list[dict]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", backlog=2048))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        return bursts(f"http://127.0.0.1:{port}/v1/answer", sizes, repeats)
    finally:
        server.should_exit = True
        thread.join(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bursts", type=int, nargs="+", default=[64, 256])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from kard_ray.loopback import free_port

    print(cpu_info(), flush=True)
    out = {"serve_proxy": behind_serve(free_port(), args.bursts, args.repeats),
           "uvicorn_direct": uvicorn_direct(free_port(), args.bursts, args.repeats)}
    for label, runs in out.items():
        for r in runs:
            print(label, r, flush=True)
    summary = {f"{label}_p99_ms_{size}": sorted(r["refusal_p99_ms"] for r in runs if r["burst"] == size)
               for label, runs in out.items() for size in args.bursts}  # every repeat, lowest first
    emit({"benchmark": "refusal_floor", **cpu_info(), **summary, "runs": out})


if __name__ == "__main__":
    main()
