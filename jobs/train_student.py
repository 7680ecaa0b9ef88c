"""Job: the train_student stage for student.method (kard, rd or ft) on Ray Train.

    python -m jobs.train_student --config configs/demo.yaml --set student.method=rd
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.train_student -c CONFIG
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import train_student


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", [train_student], argv)


if __name__ == "__main__":
    main()
