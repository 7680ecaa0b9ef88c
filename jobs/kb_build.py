"""Job: kb and index stages: chunk the KB on Ray Data, build BM25 (and dense) indexes.

    python -m jobs.kb_build --config configs/demo.yaml
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.kb_build -c CONFIG
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import index, kb


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", [kb, index], argv)


if __name__ == "__main__":
    main()
