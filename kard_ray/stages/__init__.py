"""Pipeline stages. Each module exposes ``run(cfg, run_dir, force=False) -> manifest``; they
communicate only through the run directory (see kard_ray.artifacts)."""
