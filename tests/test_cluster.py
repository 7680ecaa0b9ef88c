"""A real multi-process Ray cluster (head + a second node via `ray start`) running the tiny pipeline as a
Ray job, with the run directory and Ray Train's storage on a loopback S3 server (moto in server mode).

The cluster gets its own temp dir and ports; teardown kills exactly its processes (never `ray stop`,
which would also stop the test session's Ray), even when the job fails.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN_SETS, free_port

pytestmark = pytest.mark.ray

BUCKET = "kard-test"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}




def wait_for(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:  # it answers (e.g. 401 before authentication): it is up
            return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up in {seconds}s")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A loopback S3 API server; yields (endpoint, filesystem)."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e .[dev])")
    from pyarrow import fs

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(f"{endpoint}/moto-api/", 60)
        s3fs = fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                               endpoint_override=f"127.0.0.1:{port}", allow_bucket_creation=True)
        s3fs.create_dir(BUCKET)
        yield endpoint, s3fs
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _kill_cluster(temp_dir: str) -> None:
    """Kill every process whose command line names this cluster's temp dir (gcs, raylets, workers, dashboard)."""
    me = os.getpid()
    for _ in range(3):
        found = False
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
                continue
            try:
                cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmd:
                found = True
                try:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return
        time.sleep(1)


def _ray_start(args: list[str], env: dict) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(args[:3])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def cluster(s3):
    """Head + one worker node on 127.0.0.1 with non-default ports; yields (Jobs API address, auth token)."""
    endpoint, _ = s3
    temp_dir = tempfile.mkdtemp(prefix="krc", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash = free_port(), free_port()
    token = secrets.token_hex(32)  # token authentication, as a production cluster would run it
    env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL": endpoint, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = ["--num-cpus=3", "--object-store-memory=200000000", "--disable-usage-stats"]

    def node_ports() -> list[str]:  # two nodes on one machine (and the test session's Ray): nothing may collide
        return [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                       "metrics-export-port", "runtime-env-agent-port",
                                                       "node-manager-port", "object-manager-port")]
    try:
        _ray_start([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                        f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                        f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}", *common, *node_ports()],
                   env)
        _ray_start([ray_bin, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", *common,
                    f"--temp-dir={temp_dir}/w", *node_ports()], env)  # its own session files, as on a real node
        address = f"http://127.0.0.1:{dash}"
        wait_for(f"{address}/api/version", 120)
        yield address, token
    finally:
        _kill_cluster(temp_dir)


def _submit_once(client, endpoint: str, args: list[str]) -> str:
    return client.submit_job(
        entrypoint=f"{sys.executable} -m jobs run " + " ".join(args),
        runtime_env={"working_dir": str(REPO), "excludes": [".venv", "runs", ".git", "**/__pycache__", "*.egg-info"],
                     "env_vars": {**CREDS, "AWS_ENDPOINT_URL": endpoint, "HF_HUB_OFFLINE": "1"}})


def _submit(cluster, endpoint: str, args: list[str], timeout_s: float = 900) -> tuple[str, str]:
    from ray.job_submission import JobStatus, JobSubmissionClient

    address, token = cluster
    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    deadline = time.time() + 120
    while True:  # the dashboard answers before its job agent is ready
        try:
            job = _submit_once(client, endpoint, args)
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)
    deadline = time.time() + timeout_s
    status = client.get_job_status(job)
    while time.time() < deadline and not status.is_terminal():
        time.sleep(2)
        status = client.get_job_status(job)
    logs = client.get_job_logs(job)
    if not status.is_terminal():
        client.stop_job(job)
    return str(status), logs if status == JobStatus.SUCCEEDED else logs[-6000:]


def test_pipeline_job_on_a_two_node_cluster_with_s3_storage(cluster, s3):
    endpoint, s3fs = s3
    run_uri = f"s3://{BUCKET}/runs/tiny"
    # keep_train_checkpoints: deleting a finished stage's manifest below stands in for a job killed between
    # the model's export and the manifest, which leaves the checkpoints that a finished stage deletes
    sets = [*TINY_RUN_SETS, "student.epochs=1", "reranker.epochs=1", "eval.methods=[rd,kard_bm25,kard_reranker]",
            "keep_train_checkpoints=true"]
    args = ["--run-dir", run_uri] + [f"--set '{s}'" for s in sets]
    status, logs = _submit(cluster, endpoint, args)
    assert status == "SUCCEEDED", logs
    assert "accuracy:" in logs

    # every stage's artifacts are in the bucket, and Ray Train checkpointed there
    def exists(rel: str) -> bool:
        from pyarrow import fs

        return s3fs.get_file_info(f"{BUCKET}/runs/tiny/{rel}").type != fs.FileType.NotFound

    for rel in ["data/manifest.json", "kb/passages.arrow", "index/manifest.json", "augment/student.parquet",
                "reranker/model.safetensors", "student_kard/model.safetensors", "evaluate/report.json",
                "evaluate/accuracy.png", "train"]:
        assert exists(rel), rel
    report = json.loads(s3fs.open_input_stream(f"{BUCKET}/runs/tiny/evaluate/report.json").read())
    assert set(report["methods"]) == {"rd", "kard_bm25", "kard_reranker"}

    # a killed/failed stage resumes from S3: drop the student's and evaluation's manifests, rerun the job
    manifests = {}
    for stage in ["reranker", "student_kard", "evaluate"]:
        manifests[stage] = json.loads(s3fs.open_input_stream(f"{BUCKET}/runs/tiny/{stage}/manifest.json").read())
    for stage in ["student_kard", "evaluate"]:
        s3fs.delete_file(f"{BUCKET}/runs/tiny/{stage}/manifest.json")
    status, logs = _submit(cluster, endpoint, args)
    assert status == "SUCCEEDED", logs
    again = {s: json.loads(s3fs.open_input_stream(f"{BUCKET}/runs/tiny/{s}/manifest.json").read()) for s in manifests}
    assert again["reranker"]["started_at"] == manifests["reranker"]["started_at"]  # skipped
    assert again["student_kard"]["key"] == manifests["student_kard"]["key"]
    assert again["student_kard"]["extra"]["resumed_from_step"] == manifests["student_kard"]["counts"][
        "steps"]  # training resumed from its final checkpoint in S3 instead of starting over


def test_large_artifacts_stream_to_s3_in_parts(s3, tmp_path, monkeypatch):
    """Uploads of big files go up piece by piece (a multipart upload: ETag "<md5>-<parts>"), whole or not at all."""
    import boto3
    import numpy as np

    from kard_ray.artifacts import save_npy, upload_file

    endpoint, s3fs = s3
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    local = tmp_path / "shard.arrow"
    local.write_bytes(np.random.default_rng(0).bytes(24 << 20))
    upload_file(str(local), f"s3://{BUCKET}/stream/shard.arrow")
    vectors = np.random.default_rng(1).random((1 << 20, 3))  # 24 MiB of float64
    save_npy(f"s3://{BUCKET}/stream/vectors.npy", vectors)

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for key in ("stream/shard.arrow", "stream/vectors.npy"):
        assert "-" in client.head_object(Bucket=BUCKET, Key=key)["ETag"], key  # more than one part
    assert s3fs.open_input_stream(f"{BUCKET}/stream/shard.arrow").read() == local.read_bytes()
    back = tmp_path / "vectors.npy"
    back.write_bytes(s3fs.open_input_stream(f"{BUCKET}/stream/vectors.npy").read())
    assert np.array_equal(np.load(back), vectors)
