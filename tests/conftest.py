"""Shared fixtures: the real data folder, one small synthetic world, one Ray per session."""

from __future__ import annotations

import contextlib
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


def pytest_collection_modifyitems(items):
    """A test that uses the session Ray (directly or through a fixture) is a ``ray`` test, marked or not."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for every integration test (2 cores: logical CPUs, capped object store; two logical GPUs,
    so that GPU placement is checked: what Ray assigns, not what this machine has)."""
    from kard_ray.runtime import init_ray, shutdown_ray

    runtime = init_ray(RayConfig(num_cpus=4, num_gpus=2, object_store_memory_mb=512))
    yield runtime
    shutdown_ray()


# A tiny run directory's settings: 12 training people, the reference teacher, small models and batches.
TINY_RUN_SETS = [
    "data.synth.seed=11", "data.synth.train_people=12", "data.synth.dev_people=2", "data.synth.test_people=4",
    "data.synth.towns=10", "data.synth.regions=4", "teacher.reference=true", "teacher.n=1",
    "teacher.splits=[train, test]", "augment.candidates_per_list=8", "augment.rationale_query=reasoning",
    "reranker.max_length=48", "reranker.batch_size=4", "reranker.candidates_per_step=4", "reranker.first_stage_k=10",
    "reranker.eval_questions=8", "reranker.lr=1e-4", "reranker.hops=2", "reranker.workers.cpus_per_worker=1",
    "student.model=tiny-t5", "student.family=seq2seq", "student.lr=1e-3", "student.batch_size=4",
    "student.max_input_length=96", "student.max_target_length=48", "student.workers.cpus_per_worker=1",
    "eval.max_new_tokens=24", "eval.bootstrap=50",
]


# The whole-pipeline fixture: a bi-encoder reranker (stored passage vectors, as in the demo) and the offline
# SmolLM2 students with a few steps on their top blocks, so they write real text (a tiny T5 from scratch
# writes nothing, and Serve parity would be vacuous).
TINY_PIPELINE_SETS = [
    "reranker.architecture=bi",
    "student.model=smollm2-135m-instruct", "student.family=causal", "student.max_steps=3", "student.batch_size=4",
    "student.train_layers=2", "student.max_input_length=192", "student.max_target_length=48", "student.lr=1e-4",
]


def quiet(_msg):
    pass


def prepare_tiny_run(root, upto: str = "augment"):
    """(cfg, run) of a tiny run directory with the stages up to ``upto`` finished."""
    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.pipeline import run_stages

    cfg = load_config(None, [f"run_dir={root}/run", *TINY_RUN_SETS])
    run = RunDir(cfg.run_dir)
    run_stages(cfg, run, [upto], log=quiet)
    return cfg, run


@pytest.fixture(scope="session")
def augmented_run(ray_session, tmp_path_factory):
    """(cfg, run) of one tiny run up to ``augment``, shared by the reranker and student stage tests (each writes
    only its own stage folders and checkpoints)."""
    return prepare_tiny_run(tmp_path_factory.mktemp("augmented"))


@pytest.fixture(scope="session")
def tiny_pipeline(ray_session, tmp_path_factory):
    """(cfg, run, manifests) of the whole pipeline on the tiny world, run once per session."""
    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(None, [f"run_dir={root}/run", *TINY_RUN_SETS, *TINY_PIPELINE_SETS, "reranker.epochs=1",
                             "tracking.backend=mlflow",  # read back by test_tracking
                             "ray.concurrent_stages=4"])  # the tiny trainings are mostly start-up: overlap them
    run = RunDir(cfg.run_dir)
    return cfg, run, run_pipeline(cfg, run, log=quiet)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_apps(apps: dict):
    """Serve each ``name -> build_app(...)`` application at ``/name`` on a free loopback port; yields the
    base URL and shuts Serve down afterwards, whatever happens."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for name, application in apps.items():
            serve.run(application, name=name, route_prefix=f"/{name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def kill_after_first_checkpoint(args: list[str], storage: Path, timeout_s: float = 240) -> None:
    """Run a `kard` training command and SIGKILL it once Ray Train has registered a checkpoint in ``storage``."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout_s
    snapshot = storage / "checkpoint_manager_snapshot.json"
    try:
        while time.time() < deadline and proc.poll() is None and not (snapshot.exists() and
                                                                      "checkpoint_" in snapshot.read_text()):
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
