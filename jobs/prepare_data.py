"""Job: the ``data`` stage. ``python -m jobs.prepare_data --config configs/demo.yaml``"""

from __future__ import annotations

from jobs.common import job_setup, parse_job_args
from kard_ray.stages import data


def main(argv: list[str] | None = None) -> None:
    args = parse_job_args(__doc__ or "", argv)
    cfg, run = job_setup(args)
    data.run(cfg, run, force=args.force)


if __name__ == "__main__":
    main()
