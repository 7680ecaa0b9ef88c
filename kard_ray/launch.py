"""Starting a run the same way from every entry point (the `kard` commands, `python -m jobs`, the demo): the plan
checked first, torch's native libraries loaded before Ray's, Ray attached or started, the run directory opened
with the resolved config saved in it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

from kard_ray.artifacts import RunDir
from kard_ray.config import KardConfig, RayConfig
from kard_ray.preflight import check_plan
from kard_ray.registry import RESOLVED_CONFIG
from kard_ray.runtime import RayRuntime, cluster_nodes, init_ray, resolve_address


def load_torch_first() -> None:
    """torch before Ray: a job driver that imported torch after connecting to Ray died with "oneMKL FATAL ERROR:
    Cannot load libtorch_cpu.so" (the CI cluster test)."""
    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401


def start_ray(cfg: RayConfig, address: str | None = None, log_to_driver: bool = True) -> RayRuntime:
    load_torch_first()
    return init_ray(cfg, address, log_to_driver=log_to_driver)


def open_run(cfg: KardConfig, targets: Sequence[str], address: str | None = None) -> RunDir:
    """The run directory for ``targets``, once the plan has passed its checks (nothing is written before)."""
    if resolve_address(cfg.ray, address):  # counting the cluster's nodes attaches to it
        load_torch_first()
    check_plan(cfg, targets, cluster_nodes(cfg.ray, address))
    run = RunDir(cfg.run_dir)
    run.save_config(cfg, RESOLVED_CONFIG)
    return run


def run_targets(cfg: KardConfig, targets: Sequence[str], address: str | None = None, force: bool = False,
                log: Callable[[str], None] = print) -> dict[str, dict]:
    """``targets`` and what they need: checked, on Ray (not for question files alone), finished stages skipped."""
    from kard_ray.pipeline import run_stages

    run = open_run(cfg, targets, address)
    if list(targets) != ["data"]:  # reading question files needs no Ray
        start_ray(cfg.ray, address)
    return run_stages(cfg, run, targets, force=force, log=log)
