"""A multi-node Ray cluster and an S3 server on 127.0.0.1 whose nodes share no disk: where tests and chaos
runs check multi-node code on one machine.

Every node's HOME, TMPDIR and Ray session live under one base folder. The head uses that folder as it is;
each worker node starts in its own mount namespace (``unshare --mount``, as root) with an empty private
tmpfs over it, so a file the driver (on the head) writes there does not exist on a worker, as on separate
machines. The nodes share what a real cluster's nodes share: the installed code (the virtualenv and the
checkout, as in a container image), the network and the object store (a moto S3 server). The head offers
no CPUs, so stage work runs on the worker nodes. Processes are found by their command lines, which name
their node's folder, so stopping a node kills exactly its processes and those they started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
# Ray's per-node ports: nodes on one address must not collide (nor with another Ray on this machine)
_NODE_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
               "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, seconds: float) -> None:
    """Until ``url`` answers at all (an HTTP error is an answer: e.g. 401 before authentication)."""
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.time() > deadline:
                raise TimeoutError(f"{url} did not answer in {seconds:.0f}s") from None
            time.sleep(0.3)


def isolation_problem() -> str | None:
    """Why worker nodes cannot get a disk of their own on this machine (None when they can)."""
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    if os.geteuid() != 0:
        return "mount namespaces need root"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a mount namespace here: {probe.stderr.strip()}"
    return None


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry.name)] = (ppid, cmd)
    return out


def kill_processes_naming(marker: str, rounds: int = 5) -> int:
    """SIGKILL every process whose command line holds ``marker``, and their descendants; returns how many."""
    me, killed = os.getpid(), 0
    for _ in range(rounds):
        procs = _processes()
        doomed = {pid for pid, (_, cmd) in procs.items() if marker in cmd and pid != me}
        grew = True
        while grew:  # children of doomed processes (a job's driver names no session folder)
            more = {pid for pid, (ppid, _) in procs.items() if ppid in doomed and pid != me} - doomed
            doomed |= more
            grew = bool(more)
        if not doomed:
            return killed
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.5)
    return killed


def checkout_runtime_env(working_dir: str, env_vars: dict[str, str]) -> dict:
    """A job's runtime env: the checkout as its working dir (what the driver runs), build and run outputs left out."""
    return {"working_dir": working_dir, "env_vars": env_vars,
            "excludes": [".venv", "runs", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache"]}


def submit_job(client, entrypoint: str, runtime_env: dict, agent_wait_s: float = 120) -> str:
    """Submit a Ray job, retrying while the dashboard answers before its job agent is ready; returns its id."""
    deadline = time.time() + agent_wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def wait_job(client, job: str, timeout_s: float, until=None) -> str:
    """The job's final status (stopped at ``timeout_s``: "TIMEOUT"), or "until" as soon as ``until()`` holds."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status.is_terminal():
            return str(status)
        if until is not None and until():
            return "until"
        time.sleep(1)
    client.stop_job(job)
    return "TIMEOUT"


class S3Server:
    """moto's S3 API in server mode on a free loopback port (a real HTTP S3 endpoint, not a mock in-process)."""

    def __init__(self, log_path: str | Path):
        self.log_path, self.port, self._proc = Path(log_path), free_port(), None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to use this server through pyarrow, boto3 and Ray."""
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def filesystem(self):
        from pyarrow import fs

        return fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                               endpoint_override=f"127.0.0.1:{self.port}", allow_bucket_creation=True)

    def start(self, timeout_s: float = 60) -> "S3Server":
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                           str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_http(f"{self.endpoint}/moto-api/", timeout_s)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=30)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LoopbackCluster:
    """A head (no task CPUs, the dashboard and Jobs API, token authentication on) and worker nodes that each
    see an empty disk where the others keep their files."""

    def __init__(self, workers: int = 2, cpus_per_worker: int = 3, object_store_mb: int = 200,
                 env: dict[str, str] | None = None):
        self.workers, self.cpus_per_worker, self.object_store_mb = workers, cpus_per_worker, object_store_mb
        self.base = tempfile.mkdtemp(prefix="krc", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.token = secrets.token_hex(32)
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.nodes: list[str] = []
        self.killed: list[str] = []
        self.env = {**os.environ, **(env or {}), "HOME": f"{self.base}/home", "TMPDIR": f"{self.base}/tmp",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.env.pop("RAY_ADDRESS", None)
        bin_dir = str(Path(sys.executable).parent)  # the installed code, as an image's PATH would give it
        self.env["PATH"] = os.pathsep.join([bin_dir, self.env.get("PATH", "")])
        self._ray = f"{bin_dir}/ray"

    @property
    def address(self) -> str:
        """The dashboard and Jobs API."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def node_dir(self, name: str) -> str:
        return f"{self.base}/{name}-ray"

    def _ray_start(self, args: list[str], prefix: list[str] = ()) -> None:
        common = [f"--temp-dir={self.node_dir(self.nodes[-1])}", f"--object-store-memory={self.object_store_mb << 20}",
                  "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                  *(f"--{name}={free_port()}" for name in _NODE_PORTS)]
        for _ in range(2):  # a node start can time out on a loaded 2-core machine: once more, from nothing
            done = subprocess.run([*prefix, self._ray, "start", *args, *common], env=self.env, capture_output=True,
                                  text=True, timeout=180)
            if done.returncode == 0:
                return
            kill_processes_naming(self.node_dir(self.nodes[-1]))
        raise RuntimeError(f"ray start ({self.nodes[-1]}) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    def start(self) -> "LoopbackCluster":
        for sub in ("home", "tmp"):
            os.makedirs(f"{self.base}/{sub}", exist_ok=True)
        self.nodes.append("head")
        self._ray_start(["--head", f"--port={self.gcs_port}", "--num-cpus=0", f"--dashboard-port={self.dashboard_port}",
                         "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                         f"--ray-client-server-port={free_port()}"])
        for _ in range(self.workers):
            self.add_worker()
        wait_for_http(f"{self.address}/api/version", 120)
        return self

    def add_worker(self) -> str:
        """Start one more worker node (as an autoscaler would), on a disk of its own; returns its name."""
        name = f"w{sum(n.startswith('w') for n in self.nodes) + 1}"
        self.nodes.append(name)
        own_disk = ('mount -t tmpfs -o mode=0755 kard-node "$0" && mkdir -p "$HOME" "$TMPDIR" && exec "$@"')
        self._ray_start([f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={self.cpus_per_worker}"],
                        prefix=["unshare", "--mount", "--propagation", "private", "sh", "-c", own_disk, self.base])
        return name

    def kill_node(self, name: str) -> int:
        """SIGKILL every process of node ``name`` (a lost machine); returns how many."""
        self.killed.append(name)
        return kill_processes_naming(self.node_dir(name))

    def node_of(self, pid: int | None) -> str | None:
        """The node a process belongs to (its own command line or an ancestor's names the node's folder)."""
        procs = _processes()
        while pid in procs:
            ppid, cmd = procs[pid]
            for name in self.nodes:
                if f"{self.node_dir(name)}/" in cmd or cmd.rstrip().endswith(self.node_dir(name)):
                    return name
            pid = ppid
        return None

    def live_workers(self) -> list[str]:
        """Worker nodes started and not killed."""
        return [n for n in self.nodes if n.startswith("w") and n not in self.killed]

    def node_running(self, title: str) -> str | None:
        """A live worker node with a process whose title holds ``title`` (Ray titles workers ``ray::<Actor>...``)."""
        live = self.live_workers()
        for pid, (_, cmd) in _processes().items():
            if title in cmd and (node := self.node_of(pid)) in live:
                return node
        return None

    def stop(self) -> None:
        """Kill exactly this cluster's processes (never `ray stop`, which stops every Ray of this machine)."""
        kill_processes_naming(self.base)
        shutil.rmtree(self.base, ignore_errors=True)

    def job_client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})

    def __enter__(self) -> "LoopbackCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
