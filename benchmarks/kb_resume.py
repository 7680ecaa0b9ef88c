"""A kb + index build killed midway resumes and ends with the same outputs as an uninterrupted one.

    python benchmarks/kb_resume.py --passages 1000000

Builds the same synthetic KB twice: once uninterrupted (in this process), once through `kard index`
in a subprocess that is SIGKILLed during the kb stage and again during the index stage, each time
resumed by the next invocation. Compares the passages table and every BM25 array byte for byte, and
reports how much work each resume reused. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, cpu_info, emit, write_synthetic_kb  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def kill_when(args: list[str], ready, timeout_s: float = 3600) -> float:
    """Run ``args`` in its own process group; SIGKILL the group once ``ready()`` holds. Returns its runtime."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    try:
        while time.perf_counter() - t0 < timeout_s and proc.poll() is None and not ready():
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(2)  # let Ray's orphaned workers notice their driver is gone
    return time.perf_counter() - t0


def same_tree(a: Path, b: Path) -> list[str]:
    """Relative paths whose bytes differ (or exist on one side only), manifests and parquet parts aside."""
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file()} | {p.relative_to(b) for p in b.rglob("*")
                                                                        if p.is_file()}
    return sorted(str(n) for n in names if n.name != "manifest.json" and not n.suffix == ".parquet"
                  and not ((a / n).exists() and (b / n).exists() and filecmp.cmp(a / n, b / n, shallow=False)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()

    import pyarrow.parquet as pq
    import ray

    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.pipeline import run_one
    from kard_ray.runtime import init_ray

    out: dict = {"passages": args.passages, "cpu": cpu_info()}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        kb_dir = root / "kb"
        kb_dir.mkdir()
        sizes = [min(250_000, args.passages - s) for s in range(0, args.passages, 250_000)]
        for i, m in enumerate(sizes):
            write_synthetic_kb(str(kb_dir / f"part-{i:04d}.jsonl"), m, i)
        sets = [f"kb.paths=[{kb_dir}]", "ray.object_store_memory_mb=1024"]

        cfg = load_config(None, [f"run_dir={root}/clean", *sets])
        init_ray(cfg.ray)
        clean = RunDir(cfg.run_dir)
        with Timer() as t:
            for stage in ("kb", "index"):
                run_one(stage, cfg, clean, log=lambda _m: None)
        out["uninterrupted_s"] = round(t.s, 1)
        ray.shutdown()

        killed = root / "killed"
        cli = [sys.executable, "-m", "kard_ray.cli", "index", "--run-dir", str(killed),
               *[a for s in sets for a in ("--set", s)]]
        staging, counts = killed / "kb" / "_staging", killed / "index" / "bm25" / "_counts"
        half = max(1, len(sizes) // 2)
        out["killed_in_kb_after_s"] = round(kill_when(cli, lambda: len(list(staging.glob("file-*.json"))) >= half), 1)
        out["kb_files_done_at_kill"] = len(list(staging.glob("file-*.json")))
        shards = -(-args.passages // cfg.retrieval.bm25.shard_rows)
        out["killed_in_index_after_s"] = round(kill_when(
            cli, lambda: len(list(counts.glob("shard-*/vocab.json"))) >= max(1, shards // 2)), 1)
        out["bm25_shards_counted_at_kill"] = len(list(counts.glob("shard-*/vocab.json")))
        with Timer() as t:
            done = subprocess.run(cli, cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        out["final_resume_s"] = round(t.s, 1)
        kb_m = json.loads((killed / "kb" / "manifest.json").read_text())
        idx_m = json.loads((killed / "index" / "manifest.json").read_text())
        out["kb_files_resumed"] = kb_m["counts"]["files_resumed"]
        out["bm25_shards_resumed"] = idx_m["counts"]["bm25_shards_resumed"]
        out["passages_equal"] = pq.read_table(clean.path("kb", "passages.parquet")).equals(
            pq.read_table(str(killed / "kb" / "passages.parquet")))
        out["differing_files"] = same_tree(Path(clean.path("kb")), killed / "kb") + \
            same_tree(Path(clean.path("index")), killed / "index")
    out["identical"] = out["passages_equal"] and not out["differing_files"]
    emit(out)


if __name__ == "__main__":
    main()
