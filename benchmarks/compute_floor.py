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

from kard_ray.efficiency import compute_floor


def efficiency_blocks(manifest: dict) -> list[tuple[str, dict]]:
    """(label, efficiency block) of a stage manifest: one for a training stage, one per student for evaluation."""
    eff = (manifest.get("extra") or {}).get("efficiency") or {}
    if "achieved_gflops" in eff:
        return [(manifest["stage"], eff)]
    return [(f"{manifest['stage']}: {name}", block) for name, block in eff.items() if isinstance(block, dict)]


def floor_table(run_dir: Path) -> dict:
    rows, wall, floor, loops = [], 0.0, 0.0, 0.0
    manifests = [json.loads(path.read_text()) for path in run_dir.glob("*/manifest.json")]
    for manifest in sorted(manifests, key=lambda m: m.get("started_at") or ""):  # pipeline order
        wall += manifest.get("duration_s") or 0.0
        blocks = efficiency_blocks(manifest)
        if not blocks:
            rows.append({"stage": manifest["stage"], "wall_s": manifest.get("duration_s")})
            continue
        for i, (label, block) in enumerate(blocks):
            f = compute_floor(block)
            floor += f or 0.0
            loops += block.get("compute_s") or 0.0
            rows.append({"stage": label, "wall_s": manifest.get("duration_s") if i == 0 else None,
                         "loop_s": block.get("compute_s"), "tflop": block.get("tflops"),
                         "probe_gflops": block.get("probe_gflops"), "floor_s": round(f, 1) if f is not None else None,
                         "share_of_probe": block.get("share_of_probe")})
    return {"rows": rows, "wall_s": round(wall, 1), "loops_s": round(loops, 1), "floor_s": round(floor, 1)}


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
    table = floor_table(Path(args.run_dir))
    if not table["rows"]:
        raise SystemExit(f"no stage manifests under {args.run_dir}: run the pipeline first")
    print(markdown(table))
    missing = [r["stage"] for r in table["rows"] if "loop_s" in r and r["floor_s"] is None]
    if missing:
        print(f"(no FLOP count in the manifests of {', '.join(missing)}: written before tflops was recorded)")
    emit({"benchmark": "compute_floor", **cpu_info(), "run_dir": args.run_dir,
          "wall_s": table["wall_s"], "loops_s": table["loops_s"], "floor_s": table["floor_s"]})


if __name__ == "__main__":
    main()
