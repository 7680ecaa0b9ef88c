"""Job: the rationales stage: teacher rationales on a Ray Data actor pool.

    python -m jobs.rationales --config configs/demo.yaml
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.rationales -c CONFIG
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import rationales


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", [rationales], argv)


if __name__ == "__main__":
    main()
