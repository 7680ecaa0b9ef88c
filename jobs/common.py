"""What every job entrypoint shares: arguments, config loading and the Ray runtime."""

from __future__ import annotations

import argparse
import importlib.util

# Load torch's native libraries before Ray's: measured in the CI cluster test, a job driver that
# imported torch after connecting to Ray died with "oneMKL FATAL ERROR: Cannot load libtorch_cpu.so".
if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401

from kard_ray.artifacts import RunDir
from kard_ray.config import KardConfig, load_config
from kard_ray.runtime import init_ray


def parse_job_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", "-c", help="YAML config file")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], help="dotted override key=value")
    p.add_argument("--run-dir", help="override run_dir (local path or URI)")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else an embedded Ray)")
    p.add_argument("--force", action="store_true", help="rerun even if the stage's manifest matches")
    return p.parse_args(argv)


def job_setup(args: argparse.Namespace) -> tuple[KardConfig, RunDir]:
    overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    cfg = load_config(args.config, overrides)
    init_ray(cfg.ray, args.address)
    run = RunDir(cfg.run_dir)
    run.save_config(cfg)
    return cfg, run


def run_job(description: str, stages: list, argv: list[str] | None = None) -> None:
    """Parse arguments, set up config + Ray + run directory, run the stages in order."""
    args = parse_job_args(description, argv)
    cfg, run = job_setup(args)
    for stage in stages:
        stage.run(cfg, run, force=args.force)
