"""The reranker on the synthetic world: what each design choice adds to question-only recall@3.

    python benchmarks/reranker_synth.py                       # demo world, 120 unseen-entity test questions
    python benchmarks/reranker_synth.py --variants demo --questions 60

Runs the real stages (data -> kb -> index -> rationales from the reference teacher -> augment ->
train_reranker) in a temporary run directory with ``configs/demo.yaml`` plus each variant's
overrides, and reports recall@{1,3,10} of the needed facts for question-only BM25 and for BM25 ->
reranker on the test questions (people seen in no training question). The variants walk from the
session-1 reranker (full rationale as the BM25 query, one hop, 400 pairs) to the demo's settings,
then the demo with softer targets. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

from kard_ray.artifacts import RunDir  # noqa: E402
from kard_ray.config import load_config  # noqa: E402
from kard_ray.runtime import init_ray  # noqa: E402
from kard_ray.stages import augment, data, index, kb, rationales, train_reranker  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
OLD = ["augment.rationale_query=full", "reranker.hops=1", "reranker.samples_per_question=1"]
VARIANTS = {
    "baseline": OLD,
    "reasoning_query": ["reranker.hops=1", "reranker.samples_per_question=1"],
    "plus_two_hops": ["reranker.samples_per_question=1"],
    "demo": [],  # + 800 training pairs: configs/demo.yaml as it is
    "demo_tau1_5": ["reranker.tau1=5"],  # the demo with softer targets
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--questions", type=int, default=120, help="test questions to evaluate on")
    args = ap.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            sets = [f"run_dir={tmp}/run", f"reranker.eval_questions={args.questions}", *VARIANTS[name]]
            cfg = load_config(str(DEMO), sets)
            init_ray(cfg.ray)
            run = RunDir(cfg.run_dir)
            for stage in (data, kb, index, rationales, augment):
                stage.run(cfg, run, log=lambda m: None)
            t0 = time.perf_counter()
            m = train_reranker.run(cfg, run, log=lambda m: None)
            gap = m["extra"]["knowledge_gap"]["gold_facts"]
            results[name] = {"bm25": gap["bm25"], "reranker": gap["bm25+reranker"],
                             "gain_at_3": round(gap["bm25+reranker"]["recall@3"] - gap["bm25"]["recall@3"], 4),
                             "steps": m["counts"]["steps"], "pairs_per_s": round(m["extra"]["pairs_per_s"], 1),
                             "stage_s": round(time.perf_counter() - t0, 1)}
            r = results[name]
            print(f"{name:16s} bm25 R@3 {r['bm25']['recall@3']:.3f}  reranker R@1/3/10 "
                  + " / ".join(f"{v:.3f}" for v in r["reranker"].values())
                  + f"  gain@3 {r['gain_at_3']:+.3f}  ({r['steps']} steps, {r['stage_s']:.0f} s)", flush=True)
    emit({"questions": args.questions, "variants": results})


if __name__ == "__main__":
    main()
