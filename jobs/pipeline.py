"""Job: every stage built so far, in order, skipping finished ones (data, kb, index, rationales, augment,
train_reranker).

    python -m jobs.pipeline --config configs/demo.yaml
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.pipeline -c CONFIG
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import augment, data, index, kb, rationales, train_reranker

STAGES = [data, kb, index, rationales, augment, train_reranker]


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", STAGES, argv)


if __name__ == "__main__":
    main()
