"""The Ray-job entrypoint: ``python -m jobs <stage>... --config ...``, the same command on a laptop and
under ``ray job submit``. Stage names and their order come from the stage registry
(``kard_ray.registry``); ``python -m jobs run`` is the whole pipeline.

    python -m jobs run -c configs/demo.yaml --run-dir runs/job
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \\
        python -m jobs kb index -c configs/obqa.yaml --run-dir s3://bucket/runs/obqa
"""

from __future__ import annotations

import argparse


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
    from kard_ray.config import load_config
    from kard_ray.launch import run_targets
    from kard_ray.registry import plan

    cfg = load_config(args.config, list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else []))
    targets = plan(cfg) if args.stages == ["run"] else [s for s in args.stages if s != "run"]
    manifests = run_targets(cfg, targets, args.address, force=args.force)
    if "evaluate" in manifests:
        print("accuracy:", manifests["evaluate"]["extra"]["accuracy"])
    return manifests
