"""Job: the whole pipeline in order, skipping finished stages (data, kb, index, rationales, augment,
train_reranker, one train_student per evaluated method, evaluate).

    python -m jobs.pipeline --config configs/demo.yaml
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.pipeline -c CONFIG
"""

from __future__ import annotations

from jobs.common import job_setup, parse_job_args
from kard_ray.pipeline import run_pipeline


def main(argv: list[str] | None = None) -> None:
    args = parse_job_args(__doc__ or "", argv)
    cfg, run = job_setup(args)
    manifests = run_pipeline(cfg, run, force=args.force)
    print("accuracy:", manifests["eval"]["extra"]["accuracy"])


if __name__ == "__main__":
    main()
