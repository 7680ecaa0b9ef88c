"""The reranker on real data: OBQA, trained on annotation rationales, evaluated on held-out questions.

    python benchmarks/reranker_obqa.py                                   # obqa_dev [0:300] -> train, [300:500] -> eval
    python benchmarks/reranker_obqa.py --train A.jsonl --eval B.jsonl --kb openbook.txt --train-range 0:400

Rationales come from the annotation, not a teacher: ``fact1`` followed by the correct option
(imported through the rationales stage's import path). The real stages then run in a temporary
run directory: data -> kb -> index (BM25 + dense) -> rationales (import) -> augment ->
train_reranker; the trained reranker is evaluated behind BM25, dense and hybrid first stages.
Reported: question-only recall@{1,3,10} of ``fact1``, each first stage's ceiling (recall@kappa*),
and training throughput for each worker count in ``--workers``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

from kard_ray.artifacts import RunDir  # noqa: E402
from kard_ray.config import load_config  # noqa: E402
from kard_ray.data import load_questions  # noqa: E402
from kard_ray.pipeline import run_one, run_stages  # noqa: E402
from kard_ray.runtime import init_ray  # noqa: E402
from kard_ray.stages import reranker  # noqa: E402

OBQA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "obqa"


def sliced(path: str, span: str, out: Path) -> tuple[str, list]:
    a, b = (int(x) if x else None for x in span.split(":"))
    qs, _ = load_questions(path)
    qs = [q for q in qs[a:b] if q.facts]
    with open(out, "w") as f:
        for q in qs:
            f.write(json.dumps(q.model_dump(exclude_none=True)) + "\n")
    return str(out), qs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default=str(OBQA / "obqa_dev.jsonl"))
    ap.add_argument("--eval", default=str(OBQA / "obqa_dev.jsonl"))
    ap.add_argument("--kb", default=str(OBQA / "openbook.txt"))
    ap.add_argument("--train-range", default="0:300")
    ap.add_argument("--eval-range", default="300:500")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--first-stage-k", type=int, default=50)
    ap.add_argument("--workers", default="1", help="comma list of worker counts to time, e.g. 1,2")
    ap.add_argument("--architecture", default="bi", choices=["bi", "cross"])
    ap.add_argument("--lr", type=float, default=None, help="default: 3e-5 (bi), 5e-5 (cross)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_path, train_qs = sliced(args.train, args.train_range, tmp / "train.jsonl")
        eval_path, _ = sliced(args.eval, args.eval_range, tmp / "eval.jsonl")
        base = [f"run_dir={tmp}/run", f"data.train={train_path}", f"data.test={eval_path}", f"kb.paths=[{args.kb}]",
                "retrieval.dense.enabled=true", "teacher.source=annotations",
                f"reranker.epochs={args.epochs}", f"reranker.first_stage_k={args.first_stage_k}",
                "reranker.max_length=96", f"reranker.architecture={args.architecture}",
                f"reranker.lr={args.lr or (3e-5 if args.architecture == 'bi' else 5e-5)}", *args.overrides]
        cfg = load_config(None, base)
        init_ray(cfg.ray)
        run = RunDir(cfg.run_dir)
        run_stages(cfg, run, ["augment"], log=lambda m: None)
        throughput = {}
        for w in [int(x) for x in args.workers.split(",")]:
            wcfg = load_config(None, base + [f"reranker.workers.num_workers={w}",
                                             f"reranker.workers.cpus_per_worker={max(1, 2 // w)}"])
            m = run_one("reranker", wcfg, run, force=True, log=lambda m: None)
            throughput[f"pairs_per_s_{w}_workers"] = round(m["extra"]["pairs_per_s"], 1)
        recalls = {}
        for first in ("bm25", "dense", "hybrid"):
            ecfg = load_config(None, base + [f"reranker.first_stage={first}"])
            gap = reranker.evaluate(ecfg, run)["gold_facts"]
            for method, vals in gap.items():
                recalls[method if method != "candidate_ceiling" else f"{first}_ceiling"] = vals
    result = {"architecture": args.architecture, "train_questions": len(train_qs), "eval_range": args.eval_range,
              "epochs": args.epochs,
              "first_stage_k": args.first_stage_k, **throughput, "fact1_recall": recalls}
    for name, vals in recalls.items():
        print(f"{name:22s} " + "  ".join(f"{k}={v:.3f}" for k, v in vals.items()))
    emit(result)


if __name__ == "__main__":
    main()
