"""Job: the data stage: question sets (or a synthetic world) into the run directory.

    python -m jobs.prepare_data --config configs/demo.yaml
"""

from __future__ import annotations

from jobs.common import run_job
from kard_ray.stages import data


def main(argv: list[str] | None = None) -> None:
    run_job(__doc__ or "", [data], argv)


if __name__ == "__main__":
    main()
