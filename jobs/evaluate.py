"""Job: the evaluate stage: every trained method on the test questions; writes RUN/eval/.

    python -m jobs.evaluate --config configs/demo.yaml
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.evaluate -c CONFIG
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import evaluate


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", [evaluate], argv)


if __name__ == "__main__":
    main()
