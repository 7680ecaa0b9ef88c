"""The tiny pipeline as a Ray job on a cluster whose nodes share no disk (``kard_ray.loopback``): a head with
no task CPUs and two worker nodes, each in its own mount namespace, the run directory, the question files and
the KB on a loopback S3 server, the teacher an OpenAI-compatible endpoint with a key from the job's environment.
A driver-local path handed to a Train worker or a Data actor fails here, as it would on separate machines.

Run alone with ``pytest -m cluster``. Teardown kills exactly the cluster's processes, pass or fail.
"""

import json
import sys

import pytest
from conftest import REPO, TINY_RUN_SETS

from kard_ray.loopback import LoopbackCluster, S3Server, checkout_runtime_env, isolation_problem, submit_job, wait_job

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

BUCKET = "kard-test"
TEACHER_KEY_ENV = "KARD_TEST_TEACHER_KEY"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e .[dev])")
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.filesystem().create_dir(BUCKET)
        yield server


@pytest.fixture(scope="module")
def cluster(s3):
    problem = isolation_problem()
    if problem:
        pytest.skip(f"worker nodes cannot get a disk of their own: {problem}")
    with LoopbackCluster(workers=2, cpus_per_worker=3, env=s3.env()) as c:
        yield c


@pytest.fixture(scope="module")
def world(s3, tmp_path_factory):
    """The tiny synthetic world's folder; its question files and KB uploaded to S3."""
    from kard_ray.config import load_config
    from kard_ray.fs import upload_file
    from kard_ray.synth import generate_world, write_world

    folder = write_world(generate_world(load_config(None, TINY_RUN_SETS).data.synth), tmp_path_factory.mktemp("w"))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3.env().items():
            mp.setenv(k, v)
        for name in ("train.jsonl", "test.jsonl", "kb.jsonl"):
            upload_file(str(folder / name), f"s3://{BUCKET}/data/{name}")
    return folder


@pytest.fixture(scope="module")
def teacher_and_data(world):
    """The world's reference teacher served on loopback as the API teacher (started here, outside the cluster,
    like a provider's endpoint)."""
    from kard_ray.teacher.reference_server import ReferenceTeacherProcess

    with ReferenceTeacherProcess(world) as teacher:
        yield teacher


def data_sets(teacher_url: str) -> list[str]:
    """The tiny run's settings with its data in S3 and the given teacher as the API teacher."""
    sets = [s for s in TINY_RUN_SETS if not s.startswith(("data.synth.", "teacher.reference"))]
    return sets + [f"data.train=s3://{BUCKET}/data/train.jsonl", f"data.test=s3://{BUCKET}/data/test.jsonl",
                   f"kb.paths=[s3://{BUCKET}/data/kb.jsonl]", f"teacher.base_url={teacher_url}",
                   f"teacher.api_key_env={TEACHER_KEY_ENV}"]


def submit(cluster: LoopbackCluster, s3: S3Server, entrypoint: str):
    client = cluster.job_client()
    env = {**s3.env(), "HF_HUB_OFFLINE": "1", TEACHER_KEY_ENV: "sk-test"}
    return client, submit_job(client, entrypoint, checkout_runtime_env(str(REPO), env))


def test_a_file_the_driver_writes_is_not_on_the_worker_nodes(cluster, s3):
    """The premise of this module: what the job's driver writes on its node, a task on a worker cannot read;
    and tasks never run on the head, where the driver is."""
    script = ("import os, ray; ray.init(); p = os.path.expanduser('~/driver-wrote-this'); open(p, 'w').write('x'); "
              "f = ray.remote(num_cpus=1)(lambda: (os.path.exists(p), ray.get_runtime_context().get_node_id())); "
              "seen = ray.get([f.remote() for _ in range(8)]); "
              "head = ray.get_runtime_context().get_node_id(); "
              "print('SEEN', os.path.exists(p), any(s for s, _ in seen), any(n == head for _, n in seen), "
              "len(ray.nodes()))")
    client, job = submit(cluster, s3, f'{sys.executable} -c "{script}"')
    assert wait_job(client, job, 300) == "SUCCEEDED", client.get_job_logs(job)[-3000:]
    line = next(line for line in client.get_job_logs(job).splitlines() if line.startswith("SEEN"))
    # the driver sees its file; no task does; no task ran on the head; head + two workers
    assert line.split() == ["SEEN", "True", "False", "False", "3"], line


def test_large_artifacts_stream_to_s3_in_parts(s3, tmp_path, monkeypatch):
    """Uploads of big files go up piece by piece (a multipart upload: ETag "<md5>-<parts>"), whole or not at all."""
    import boto3
    import numpy as np

    from kard_ray.fs import save_npy, upload_file

    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    local = tmp_path / "shard.arrow"
    local.write_bytes(np.random.default_rng(0).bytes(24 << 20))
    upload_file(str(local), f"s3://{BUCKET}/stream/shard.arrow")
    vectors = np.random.default_rng(1).random((1 << 20, 3))  # 24 MiB of float64
    save_npy(f"s3://{BUCKET}/stream/vectors.npy", vectors)

    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    for key in ("stream/shard.arrow", "stream/vectors.npy"):
        assert "-" in client.head_object(Bucket=BUCKET, Key=key)["ETag"], key  # more than one part
    fs = s3.filesystem()
    assert fs.open_input_stream(f"{BUCKET}/stream/shard.arrow").read() == local.read_bytes()
    back = tmp_path / "vectors.npy"
    back.write_bytes(fs.open_input_stream(f"{BUCKET}/stream/vectors.npy").read())
    assert np.array_equal(np.load(back), vectors)


def test_pipeline_job_on_nodes_without_a_shared_disk_resumes_after_a_kill(cluster, s3, teacher_and_data):
    fs = s3.filesystem()
    run = f"{BUCKET}/runs/tiny"
    sets = data_sets(teacher_and_data.base_url) + ["eval.methods=[kard_bm25,kard_reranker]", "reranker.epochs=1",
                                                   "student.epochs=2", "student.checkpoint_every_steps=1"]
    entrypoint = f"{sys.executable} -m jobs run --run-dir s3://{run} " + " ".join(f"--set '{s}'" for s in sets)

    def exists(rel: str) -> bool:
        from pyarrow.fs import FileType

        return fs.get_file_info(f"{run}/{rel}").type != FileType.NotFound

    def interrupted() -> dict[str, str]:
        """Training stages with a registered checkpoint in S3 and no manifest: what a kill now leaves behind."""
        from pyarrow.fs import FileSelector, FileType

        if not exists("train"):
            return {}
        found = {}
        for info in fs.get_file_info(FileSelector(f"{run}/train", recursive=False)):
            stage = info.base_name.rsplit("-", 1)[0]
            snapshot = fs.get_file_info(f"{info.path}/checkpoint_manager_snapshot.json")
            if info.type == FileType.Directory and snapshot.type == FileType.File and \
                    not exists(f"{stage}/manifest.json"):
                found[stage] = info.base_name
        return found

    # 1. killed once a training stage has checkpointed in S3 (the job is stopped: SIGTERM, then SIGKILL)
    client, job = submit(cluster, s3, entrypoint)
    status = wait_job(client, job, 1200, until=lambda: bool(interrupted()))
    assert status == "until", client.get_job_logs(job)[-6000:]
    client.stop_job(job)
    assert wait_job(client, job, 120) == "STOPPED"
    killed_in = interrupted()
    assert killed_in, "the kill came after every training stage had finished"

    # 2. resubmitted: finished stages skip, the interrupted ones resume from their checkpoints in S3
    client, job = submit(cluster, s3, entrypoint)
    status = wait_job(client, job, 1200)
    logs = client.get_job_logs(job)
    assert status == "SUCCEEDED", logs[-6000:]
    assert "accuracy:" in logs
    for stage in killed_in:
        manifest = json.loads(fs.open_input_stream(f"{run}/{stage}/manifest.json").read())
        assert manifest["extra"]["resumed_from_step"], (stage, manifest["extra"])
    for rel in ["data/manifest.json", "kb/passages.arrow", "index/manifest.json", "augment/student.parquet",
                "reranker/model.safetensors", "student_kard/model.safetensors", "evaluate/report.json",
                "evaluate/accuracy.png"]:
        assert exists(rel), rel
    report = json.loads(fs.open_input_stream(f"{run}/evaluate/report.json").read())
    assert set(report["methods"]) == {"kard_bm25", "kard_reranker"}


@pytest.mark.chaos
def test_a_worker_node_lost_during_the_teacher_calls_costs_no_request_twice(cluster, s3, world):
    """Every worker node is SIGKILLed while the rationales stage calls a slow teacher (so the teacher actors and
    the blocks they made are lost wherever Ray put them), and replacement nodes start, as an autoscaler would: the
    stage still finishes, with every question answered and 0 requests billed twice."""
    from kard_ray.teacher.reference_server import ReferenceTeacherProcess, ServerOptions

    run = f"{BUCKET}/runs/chaos-teacher"
    with ReferenceTeacherProcess(world, ServerOptions(latency_ms=800)) as teacher:
        sets = data_sets(teacher.base_url) + ["teacher.concurrency=4", "teacher.actors=2", "teacher.batch_size=4"]
        entrypoint = f"{sys.executable} -m jobs rationales --run-dir s3://{run} " + " ".join(
            f"--set '{s}'" for s in sets)
        client, job = submit(cluster, s3, entrypoint)
        assert wait_job(client, job, 600, until=lambda: teacher.stats()["billed_requests"] >= 8) == "until", \
            client.get_job_logs(job)[-6000:]
        # beside the driver on the head (teacher.actors_on_driver_node): no worker node's loss takes a paid answer
        assert cluster.node_running("RationaleWorker") is None, "a teacher actor runs on a worker node"
        victims = cluster.live_workers()
        assert all(cluster.kill_node(n) > 0 for n in victims)
        for _ in victims:
            cluster.add_worker()
        status = wait_job(client, job, 900)
        stats = teacher.stats()
    assert status == "SUCCEEDED", client.get_job_logs(job)[-6000:]
    manifest = json.loads(s3.filesystem().open_input_stream(f"{run}/rationales/manifest.json").read())
    assert manifest["counts"]["questions_without_rationale"] == 0, manifest["counts"]
    assert stats["duplicate_billed"] == 0, stats
