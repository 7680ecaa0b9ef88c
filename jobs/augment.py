"""Job: the augment stage: rationale-retrieved passages and reranker candidate sets.

    python -m jobs.augment --config configs/demo.yaml
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.augment -c CONFIG
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import augment


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", [augment], argv)


if __name__ == "__main__":
    main()
