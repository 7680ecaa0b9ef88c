"""A finished run's compute floor against its wall time: how much of each stage is the model's arithmetic.

    python benchmarks/compute_floor.py --run-dir runs/demo

Every training and generation stage records in its manifest the FLOPs of its loop, the seconds the loop took
and the machine's matmul probe (``kard_ray.efficiency``). The floor of a stage is its FLOPs at the probe's
speed: what it would take if every matmul ran as fast as a plain fp32 1024x1024 matmul on the same threads.
The rest of a stage's wall time is start-up, data, checkpoints and reports. If the floors alone fill a
time budget, no scheduling or overhead cut can meet it: only fewer FLOPs or a faster machine can.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import cpu_info, emit

from kard_ray.efficiency import floor_summary, floor_table


def markdown(table: dict) -> str:
    cols = ["stage", "wall_s", "loop_s", "tflop", "probe_gflops", "floor_s", "share_of_probe"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |" for r in table["rows"]]
    lines.append(f"| **all stages** | **{table['wall_s']}** | {table['loops_s']} | | | **{table['floor_s']}** | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    args = p.parse_args()
    run_dir = Path(args.run_dir)
    table = floor_table([json.loads(p.read_text()) for p in run_dir.glob("*/manifest.json")])
    if not table["rows"]:
        raise SystemExit(f"no stage manifests under {args.run_dir}: run the pipeline first")
    print(markdown(table))
    print(floor_summary(table))
    missing = [r["stage"] for r in table["rows"] if "loop_s" in r and r["floor_s"] is None]
    if missing:
        print(f"(no FLOP count in the manifests of {', '.join(missing)}: written before tflops was recorded)")
    emit({"benchmark": "compute_floor", **cpu_info(), "run_dir": args.run_dir,
          **{k: table[k] for k in ("wall_s", "stage_s", "loops_s", "floor_s", "wall_over_floor", "outside_loops_s",
                                   "outside_loops_share")}})


if __name__ == "__main__":
    main()
