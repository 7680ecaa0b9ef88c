"""Serve a finished run and check that every evaluated question gets the evaluated answer back.

    python benchmarks/parity.py --run-dir runs/demo

Builds the answer service from the run (its resolved config, no overrides), sends every question of the
evaluated split to /v1/answer and compares passage ids and generations with evaluate/predictions.parquet
(kard_reranker). Ends with one JSON line: questions, identical, same_passages, same_generation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import cpu_info, free_port  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--concurrency", type=int, default=1, help="parallel requests (1: one at a time)")
    args = p.parse_args()

    from ray import serve

    from kard_ray.artifacts import RunDir
    from kard_ray.config import RayConfig
    from kard_ray.runtime import init_ray
    from serve.app import ServeAppArgs, build_app
    from serve.parity import parity

    print(json.dumps(cpu_info()), flush=True)
    init_ray(RayConfig())
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(ServeAppArgs(run_dir=args.run_dir, request_timeout_s=600)), name="kard", route_prefix="/")
        result = parity(f"http://127.0.0.1:{port}", RunDir(args.run_dir), args.concurrency)
    finally:
        serve.shutdown()
    for m in result["mismatches"][:10]:
        print("mismatch:", json.dumps(m))
    print(json.dumps({k: v for k, v in result.items() if k != "mismatches"}))


if __name__ == "__main__":
    main()
