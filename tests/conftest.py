"""Shared fixtures: the real data folder, one small synthetic world, one Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kard_ray.config import RayConfig, SynthConfig

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("KARD_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def shared(rel: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"real benchmark data not available: {p} is absent")
    return p


TINY_WORLD = SynthConfig(seed=7, train_people=30, dev_people=8, test_people=12, towns=16, regions=5)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    from kard_ray.synth import generate_world, write_world

    return write_world(generate_world(TINY_WORLD), tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for every integration test (2 cores: logical CPUs, capped object store)."""
    from kard_ray.runtime import init_ray, shutdown_ray

    runtime = init_ray(RayConfig(num_cpus=4, object_store_memory_mb=512))
    yield runtime
    shutdown_ray()
