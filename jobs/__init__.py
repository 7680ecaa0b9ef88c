"""The Ray-job entrypoint: ``python -m jobs <stage>... --config ...``, the same command on a laptop and
under ``ray job submit``. Stage names and their order come from the stage registry
(``kard_ray.registry``); ``python -m jobs run`` is the whole pipeline.

    python -m jobs run -c configs/demo.yaml --run-dir runs/job
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \\
        python -m jobs kb index -c configs/obqa.yaml --run-dir s3://bucket/runs/obqa
"""

from __future__ import annotations

import argparse
import importlib.util


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from kard_ray.registry import STAGES

    lines = "\n".join(f"  {name:<12} {s.summary}" for name, s in STAGES.items())
    p = argparse.ArgumentParser(prog="python -m jobs", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__, epilog=f"stages (each also runs what it needs first):\n"
                                                            f"  {'run':<12} the whole pipeline\n{lines}")
    p.add_argument("stages", nargs="+", metavar="STAGE", choices=["run", *STAGES], help="run, or stage names")
    p.add_argument("--config", "-c", help="YAML config file")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], help="dotted override key=value")
    p.add_argument("--run-dir", help="override run_dir (local path or URI)")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else an embedded Ray)")
    p.add_argument("--force", action="store_true", help="rerun the named stages even if their manifests match")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Parse arguments, load the config, attach to (or start) Ray, run the stages; returns their manifests."""
    args = parse_args(argv)
    # Load torch's native libraries before Ray's: measured in the CI cluster test, a job driver that
    # imported torch after connecting to Ray died with "oneMKL FATAL ERROR: Cannot load libtorch_cpu.so".
    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401

    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.pipeline import run_pipeline, run_stages
    from kard_ray.preflight import check_plan
    from kard_ray.registry import RESOLVED_CONFIG, plan
    from kard_ray.runtime import cluster_nodes, init_ray

    cfg = load_config(args.config, list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else []))
    init_ray(cfg.ray, args.address)
    targets = plan(cfg) if args.stages == ["run"] else [s for s in args.stages if s != "run"]
    check_plan(cfg, targets, cluster_nodes(cfg.ray, args.address))  # refused before the first stage runs
    run = RunDir(cfg.run_dir)
    run.save_config(cfg, RESOLVED_CONFIG)
    if args.stages == ["run"]:
        manifests = run_pipeline(cfg, run, force=args.force)
    else:
        manifests = run_stages(cfg, run, [s for s in args.stages if s != "run"], force=args.force)
    if "evaluate" in manifests:
        print("accuracy:", manifests["evaluate"]["extra"]["accuracy"])
    return manifests
