"""Job: the train_reranker stage: the KARD reranker on Ray Train.

    python -m jobs.train_reranker --config configs/demo.yaml
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.train_reranker -c CONFIG
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import train_reranker


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", [train_reranker], argv)


if __name__ == "__main__":
    main()
