"""Chaos on a cluster whose nodes share no disk: worker nodes lost during the teacher calls, the reranker's training,
the evaluation and serving; overload goodput; the Serve endpoint's autoscaling under a load ramp.

    python benchmarks/chaos.py [--parts teacher train eval serve autoscale overload] [--out runs/chaos]
                               [--direct-ingress]

The cluster is ``kard_ray.loopback``'s: a head with no task CPUs and worker nodes on 127.0.0.1, each on a disk of its
own, the run directories and the world's files on a loopback S3 server, the reference teacher an OpenAI-compatible
endpoint outside the cluster. A node is lost by SIGKILL of every process it runs; a replacement node starts at once,
as an autoscaler would. Jobs go through the Jobs API, the Serve app through Serve's REST API (what ``serve deploy``
and KubeRay use), both with token authentication.

1. teacher: all worker nodes lost while the rationales stage calls a slow teacher; the rationales must equal an
   undisturbed run's and no request may be billed twice.
2. train: the node of the reranker's Train worker lost once a checkpoint is in S3; the stage must finish, resumed from
   that checkpoint (``resumed_from_step`` in its manifest).
3. eval: a node lost while the evaluation generates on Ray Data actors; predictions must equal the undisturbed run's.
4. serve: two replicas of each model deployment, one per worker node, clients sending for a few minutes, one node
   lost: statuses per 5 s window, success in the minute after the loss, time until every deployment is back.
5. autoscale: clients ramped 1 -> 32 -> 0; the Generator's replica count read every second (PNG).
6. overload: bursts against the default app (``benchmarks/overload.py``'s method) with capacity measured first.

``--direct-ingress`` starts every node with Ray Serve's direct ingress (``serve/direct_ingress.py``): requests go
to the ingress replica itself, no proxy; the endpoint's address is read from Serve's details either way.

Prints each part's figures; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import yaml
from common import cpu_info, emit
from overload import burst, capacity, send

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BUCKET = "kard-chaos"
TEACHER_KEY_ENV = "KARD_CHAOS_TEACHER_KEY"
# a small synthetic world and small models: the faults are the system's, not the model's
WORLD = {"seed": 11, "train_people": 12, "dev_people": 2, "test_people": 6, "towns": 10, "regions": 4}
RUN_SETS = [
    "teacher.n=1", "teacher.splits=[train, test]", "teacher.concurrency=4", "teacher.actors=2", "teacher.batch_size=4",
    "augment.candidates_per_list=8", "augment.rationale_query=reasoning",
    "reranker.architecture=bi", "reranker.max_length=48", "reranker.batch_size=4", "reranker.candidates_per_step=4",
    "reranker.first_stage_k=10", "reranker.eval_questions=8", "reranker.lr=1e-4", "reranker.hops=2",
    "reranker.workers.cpus_per_worker=1", "reranker.epochs=2", "reranker.checkpoint_every_steps=2",
    "student.model=smollm2-135m-instruct", "student.family=causal", "student.max_steps=3", "student.batch_size=4",
    "student.train_layers=2", "student.max_input_length=192", "student.max_target_length=48", "student.lr=1e-4",
    "student.workers.cpus_per_worker=1", "eval.methods=[kard_bm25,kard_reranker]", "eval.max_new_tokens=24",
    "eval.bootstrap=50",
]


class Chaos:
    """The cluster, the S3 server, the world and the job plumbing shared by the parts."""

    def __init__(self, cluster, s3, teachers: dict):
        self.cluster, self.s3, self.teachers = cluster, s3, teachers  # run name -> its own reference teacher
        self.fs = s3.filesystem()
        self.client = cluster.job_client()

    def sets(self, run: str) -> list[str]:
        data = f"s3://{BUCKET}/data"
        return RUN_SETS + [f"data.train={data}/train.jsonl", f"data.test={data}/test.jsonl",
                           f"kb.paths=[{data}/kb.jsonl]", f"teacher.base_url={self.teachers[run].base_url}",
                           f"teacher.api_key_env={TEACHER_KEY_ENV}"]

    def submit(self, stages: str, run: str) -> str:
        from kard_ray.loopback import checkout_runtime_env, submit_job

        sets = " ".join(f"--set '{s}'" for s in self.sets(run))
        env = {**self.s3.env(), "HF_HUB_OFFLINE": "1", TEACHER_KEY_ENV: "sk-chaos"}
        return submit_job(self.client, f"{sys.executable} -m jobs {stages} --run-dir s3://{BUCKET}/{run} {sets}",
                          checkout_runtime_env(str(REPO), env))

    def finish(self, job: str, timeout_s: float = 1800, until=None) -> str:
        from kard_ray.loopback import wait_job

        status = wait_job(self.client, job, timeout_s, until)
        if status not in ("SUCCEEDED", "until"):
            raise RuntimeError(f"job {job}: {status}\n{self.client.get_job_logs(job)[-6000:]}")
        return status

    def exists(self, key: str) -> bool:
        from pyarrow.fs import FileType

        return self.fs.get_file_info(f"{BUCKET}/{key}").type != FileType.NotFound

    def read_json(self, key: str) -> dict:
        return json.loads(self.fs.open_input_stream(f"{BUCKET}/{key}").read())

    def read_table(self, key: str):
        import pyarrow.parquet as pq

        return pq.read_table(self.fs.open_input_file(f"{BUCKET}/{key}")).to_pandas()

    def lose(self, name: str) -> dict:
        """Node ``name`` lost (every process SIGKILLed) and a replacement started; what happened, timed."""
        t0 = time.perf_counter()
        killed = self.cluster.kill_node(name)
        replacement = self.cluster.add_worker()
        return {"lost": name, "processes_killed": killed, "replacement": replacement,
                "replacement_started_s": round(time.perf_counter() - t0, 1)}


def same_rows(a, b, key: list[str], bookkeeping: tuple[str, ...] = ()) -> bool:
    """Two tables with the same rows, whatever their order, bookkeeping columns aside (e.g. whether an answer came
    from the cache: after a loss some do)."""
    cols = sorted(c for c in a.columns if c not in bookkeeping)
    if cols != sorted(c for c in b.columns if c not in bookkeeping) or len(a) != len(b):
        return False
    a, b = (t[cols].sort_values(key).reset_index(drop=True).astype(str) for t in (a, b))
    return bool(a.equals(b))


# --------------------------------------------------------------------------- 1-3: the pipeline's stages


def part_teacher(chaos: Chaos) -> dict:
    """Rationales undisturbed (run ``calm``, which the other parts then use) and with every worker node lost after
    8 billed requests (run ``storm``), each run with a slow teacher of its own."""
    out = {}
    for run in ("calm", "storm"):
        teacher = chaos.teachers[run]
        t0 = time.perf_counter()
        job = chaos.submit("rationales", run)
        if run == "storm":
            chaos.finish(job, 900, until=lambda t=teacher: t.stats()["billed_requests"] >= 8)
            out["losses"] = [chaos.lose(n) for n in chaos.cluster.live_workers()]
        chaos.finish(job)
        stats = teacher.stats()
        out[run] = {"seconds": round(time.perf_counter() - t0, 1), "billed": stats["billed_requests"],
                    "billed_twice": stats["duplicate_billed"]}
    calm, storm = (chaos.read_table(f"{r}/rationales/rationales.parquet") for r in ("calm", "storm"))
    out["identical"] = same_rows(calm, storm, ["qid", "sample"], bookkeeping=("cached", "attempts"))
    out["rows"] = len(storm)
    print("teacher", json.dumps(out), flush=True)
    return out


def part_train(chaos: Chaos) -> dict:
    """The reranker trained in run ``storm``; the node of its Train worker lost after a checkpoint reached S3."""
    from pyarrow.fs import FileSelector

    def checkpointed() -> bool:
        if not chaos.exists("storm/train"):
            return False
        return any(chaos.exists(f"storm/train/{i.base_name}/checkpoint_manager_snapshot.json")
                   for i in chaos.fs.get_file_info(FileSelector(f"{BUCKET}/storm/train"))
                   if i.base_name.startswith("reranker-"))

    t0 = time.perf_counter()
    job = chaos.submit("reranker", "storm")
    chaos.finish(job, 1200, until=checkpointed)
    victim = chaos.cluster.node_running("RayTrainWorker") or chaos.cluster.live_workers()[0]
    loss = chaos.lose(victim)
    chaos.finish(job)
    manifest = chaos.read_json("storm/reranker/manifest.json")
    out = {**loss, "seconds": round(time.perf_counter() - t0, 1),
           "resumed_from_step": manifest["extra"].get("resumed_from_step"), "steps": manifest["counts"]["steps"]}
    print("train", json.dumps(out), flush=True)
    return out


def part_eval(chaos: Chaos) -> dict:
    """Run ``calm`` finished undisturbed; its evaluation rerun (--force) with a node lost while it generates."""
    chaos.finish(chaos.submit("run", "calm"))
    before = chaos.read_table("calm/evaluate/predictions.parquet")
    t0 = time.perf_counter()
    job = chaos.submit("evaluate --force", "calm")
    chaos.finish(job, 900, until=lambda: chaos.cluster.node_running("MapWorker") is not None)
    time.sleep(3)  # some answers made, others not
    loss = chaos.lose(chaos.cluster.node_running("MapWorker") or chaos.cluster.live_workers()[0])
    chaos.finish(job)
    after = chaos.read_table("calm/evaluate/predictions.parquet")
    key = [c for c in ("method", "qid") if c in after.columns]
    out = {**loss, "seconds": round(time.perf_counter() - t0, 1), "predictions": len(after),
           "identical": same_rows(before, after, key)}
    print("eval", json.dumps(out), flush=True)
    return out


# --------------------------------------------------------------------------- 4-6: the Serve endpoint


def success(statuses: list[int]) -> float | None:
    """The share of 200s (None for no requests)."""
    return round(sum(s == 200 for s in statuses) / len(statuses), 3) if statuses else None


class Endpoint:
    """The answer service of run ``calm`` deployed through Serve's REST API; replica counts read from it."""

    def __init__(self, chaos: Chaos):
        from kard_ray.artifacts import RunDir
        from kard_ray.loopback import free_port
        from kard_ray.stages.data import read_split

        self.chaos, self.port = chaos, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/answer"
        self.bodies = [{"question": q.question, "options": q.options, "return_passages": False}
                       for q in read_split(RunDir(f"s3://{BUCKET}/calm"), "test")]

    def client(self):
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        return ServeSubmissionClient(self.chaos.cluster.address,
                                     headers={"Authorization": f"Bearer {self.chaos.cluster.token}"})

    def deploy(self, args: dict, deployments: list[dict], timeout_s: float = 600) -> None:
        config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": self.port},
                  "applications": [{"name": "kard", "route_prefix": "/", "import_path": "serve.app:build_app",
                                    "args": {"run_dir": f"s3://{BUCKET}/calm", **args},
                                    "deployments": deployments}]}
        from serve.direct_ingress import http_targets, target_urls

        self.client().deploy_applications(config)
        deadline = time.time() + timeout_s
        while True:
            instance = self.client().get_serve_details()
            details, targets = instance.get("applications", {}).get("kard", {}), http_targets(instance, "kard")
            if details.get("status") == "RUNNING" and targets:
                break
            if time.time() > deadline or details.get("status") == "DEPLOY_FAILED":
                raise RuntimeError(f"the app did not start: {json.dumps(details)[-4000:]}")
            time.sleep(2)
        self.url = target_urls(targets, "127.0.0.1")[0] + "/v1/answer"  # the head's proxy, or the ingress replica
        for body in self.bodies[:2]:  # warm: models loaded, first batches run
            send(self.url, body, 300)

    def details(self) -> dict:
        return self.client().get_serve_details().get("applications", {}).get("kard", {})

    def replicas(self) -> dict[str, dict]:
        """Per deployment: running replicas, the target, and the nodes (loopback names) they run on."""
        out = {}
        for name, d in self.details().get("deployments", {}).items():
            running = [r for r in d.get("replicas", []) if r.get("state") == "RUNNING"]
            out[name] = {"running": len(running), "target": d.get("target_num_replicas"),
                         "nodes": sorted(filter(None, (self.chaos.cluster.node_of(r.get("pid")) for r in running)))}
        return out

    def delete(self) -> None:
        self.client().delete_applications()
        deadline = time.time() + 120
        while self.details() and time.time() < deadline:
            time.sleep(1)


class Load:
    """Closed-loop clients against the endpoint; every answer logged as (time, status, seconds)."""

    def __init__(self, endpoint: Endpoint, timeout_s: float):
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self.log: list[tuple[float, int, float]] = []
        self.lock, self.stop_all = threading.Lock(), threading.Event()
        self.threads: list[tuple[threading.Thread, threading.Event]] = []
        self.t0 = time.perf_counter()

    def _client(self, i: int, stop: threading.Event) -> None:
        j = i
        while not (stop.is_set() or self.stop_all.is_set()):
            start = time.perf_counter()
            status, seconds, _ = send(self.endpoint.url, self.endpoint.bodies[j % len(self.endpoint.bodies)],
                                      self.timeout_s)
            with self.lock:
                self.log.append((start - self.t0, status, seconds))
            j += 7
            if status == 503:
                time.sleep(0.5)  # a client that honours Retry-After a little

    def clients(self, n: int) -> None:
        """Grow or shrink to ``n`` clients."""
        while len(self.threads) < n:
            stop = threading.Event()
            t = threading.Thread(target=self._client, args=(len(self.threads), stop), daemon=True)
            t.start()
            self.threads.append((t, stop))
        while len(self.threads) > n:
            self.threads.pop()[1].set()

    def close(self) -> None:
        self.stop_all.set()
        for t, _ in self.threads:
            t.join()

    def windows(self, width_s: float = 5) -> list[dict]:
        """Statuses per window of requests started in it: 2xx, 4xx, 5xx (500 counted apart), client timeouts."""
        out: dict[int, Counter] = {}
        for start, status, _ in self.log:
            c = out.setdefault(int(start // width_s), Counter())
            c["timeout" if status == 0 else "500" if status == 500 else f"{status // 100}xx"] += 1
        return [{"t_s": k * width_s, **out[k]} for k in sorted(out)]


def part_serve(chaos: Chaos, seconds: float, loss_at_s: float, clients: int) -> dict:
    """Two replicas of each model deployment, one per worker node; constant load; one node lost."""
    endpoint = Endpoint(chaos)
    pinned = {"max_replicas_per_node": 1, "autoscaling_config": {"min_replicas": 2, "max_replicas": 2}}
    endpoint.deploy({"request_timeout_s": 30}, [{"name": "Generator", **pinned}, {"name": "RerankerModel", **pinned},
                                                {"name": "Retriever", "num_replicas": 2, "max_replicas_per_node": 1}])
    placed = endpoint.replicas()
    print("serve placement", json.dumps(placed), flush=True)
    load = Load(endpoint, timeout_s=60)
    load.clients(clients)
    time.sleep(loss_at_s)
    victim = placed["Generator"]["nodes"][0]
    t_loss = time.perf_counter() - load.t0
    loss = chaos.lose(victim)
    recovered_s, changes, last = None, [], None
    while time.perf_counter() - load.t0 < seconds:
        now = endpoint.replicas()  # a replica whose process is gone has no node: "nodes" holds the live ones
        live = {k: len(v["nodes"]) for k, v in now.items()}
        if live != last:
            changes.append((round(time.perf_counter() - load.t0, 1), live))
            print("  replicas alive", json.dumps(changes[-1]), flush=True)
            last = live
        if recovered_s is None and all(len(v["nodes"]) >= (v["target"] or 0) for v in now.values()):
            recovered_s = round(time.perf_counter() - load.t0 - t_loss, 1)
        time.sleep(1)
    load.close()
    endpoint.delete()
    after_loss = [s for t, s, _ in load.log if t_loss <= t < t_loss + 60]
    recovered = [s for t, s, _ in load.log if recovered_s is not None and t >= t_loss + recovered_s]
    out = {**loss, "lost_at_s": round(t_loss, 1), "requests": len(load.log),
           "statuses": dict(Counter(s for _, s, _ in load.log)),
           "serve_5xx": sum(1 for _, s, _ in load.log if s >= 500 and s != 503),
           "serve_500": sum(1 for _, s, _ in load.log if s == 500),
           "timeouts": sum(1 for _, s, _ in load.log if s == 0),
           "success_after_loss": success(after_loss),
           "success_once_recovered": success(recovered) if recovered_s is not None else None,
           "recovery_s": recovered_s, "replica_changes": changes, "windows": load.windows()}
    print("serve", json.dumps({k: v for k, v in out.items() if k not in ("windows", "replica_changes")}), flush=True)
    for w in out["windows"]:
        print("  window", json.dumps(w), flush=True)
    return out


def part_autoscale(chaos: Chaos, out_dir: Path, step_s: float, downscale_delay_s: float) -> dict:
    """Clients 1, 2, 4, ..., 32 and back to 0; the Generator's replicas read every second; plot."""
    endpoint = Endpoint(chaos)
    scaling = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2, "upscale_delay_s": 3,
               "downscale_delay_s": downscale_delay_s}
    endpoint.deploy({"request_timeout_s": 30, "generator_autoscaling": scaling}, [])
    ramp = [1, 2, 4, 8, 16, 32, 16, 8, 4, 2, 1, 0]
    load, trace = Load(endpoint, timeout_s=60), []
    schedule = [(i * step_s, n) for i, n in enumerate(ramp)]
    end = len(ramp) * step_s + downscale_delay_s + 60
    back_to_min_s, zero_at = None, schedule[-1][0]
    while (now := time.perf_counter() - load.t0) < end:
        n = [c for t, c in schedule if t <= now][-1]  # the ramp's step now
        load.clients(n)
        running = endpoint.replicas().get("Generator", {}).get("running", 0)
        trace.append((round(now, 1), n, running))
        if now >= zero_at and back_to_min_s is None and running <= scaling["min_replicas"]:
            back_to_min_s = round(now - zero_at, 1)
        if back_to_min_s is not None and now > zero_at + 10:
            break
        time.sleep(1)
    load.close()
    endpoint.delete()
    first_up = next((t for t, _, r in trace if r > scaling["min_replicas"]), None)
    out = {"max_replicas": max(r for _, _, r in trace), "scale_up_s": first_up,
           "back_to_min_s": back_to_min_s, "requests": len(load.log),
           "serve_5xx": sum(1 for _, s, _ in load.log if s >= 500 and s != 503),
           "statuses": dict(Counter(s for _, s, _ in load.log)), "trace": trace}
    out["plot"] = plot_autoscale(trace, load.log, out_dir / "autoscale.png")
    print("autoscale", json.dumps({k: v for k, v in out.items() if k != "trace"}), flush=True)
    return out


def plot_autoscale(trace: list, log: list, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    t = [x[0] for x in trace]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.step(t, [x[2] for x in trace], where="post", color="C0")
    a.set_ylabel("Generator replicas running", color="C0")
    a.set_ylim(0, max(x[2] for x in trace) + 1)
    c = a.twinx()
    c.step(t, [x[1] for x in trace], where="post", color="C1", alpha=0.6)
    c.set_ylabel("clients", color="C1")
    edges = np.arange(0, max(t) + 10, 10)
    ok = [(s, sec) for s, code, sec in log if code == 200]
    for q, label in ((50, "p50"), (99, "p99")):
        ys = [np.percentile([sec for s, sec in ok if lo <= s < lo + 10], q) if any(lo <= s < lo + 10 for s, _ in ok)
              else np.nan for lo in edges]
        b.plot(edges + 5, ys, marker=".", label=f"{label} latency (s)")
    b.set_xlabel("seconds since the first client")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def bursts_against(endpoint: "Endpoint", args: dict, bursts: list[int], qps: float, steady_clients: int,
                   label: str) -> list[dict]:
    """After 20 s of steady traffic, each burst against the app deployed with ``args``; goodput against ``qps``."""
    endpoint.deploy(args, [])
    capacity(endpoint.url, endpoint.bodies, steady_clients, 20)  # a service in use
    runs = []
    for size in bursts:
        r = burst(endpoint.url, endpoint.bodies, size, 30)
        r["goodput_ratio"] = round(r["answered_in_time"] / (qps * r["interval_s"]), 3) if qps else None
        runs.append(r)
        print(label, json.dumps(r), flush=True)
        time.sleep(30)
    endpoint.delete()
    return runs


def part_overload(chaos: Chaos, bursts: list[int], capacity_clients: int, compare: dict) -> dict:
    """The default app's capacity (no timeout, no admission control), then bursts against the default app (and,
    with ``compare``, against the default with those fields: a before/after in one run)."""
    endpoint = Endpoint(chaos)
    endpoint.deploy({"admission_control": False, "request_timeout_s": 600}, [])
    qps = capacity(endpoint.url, endpoint.bodies, capacity_clients, 60)
    endpoint.delete()
    runs = bursts_against(endpoint, {}, bursts, qps, capacity_clients // 2, "overload")
    out = {"capacity_qps": round(qps, 3), "bursts": runs,
           "goodput_ratio": min((r["goodput_ratio"] or 0 for r in runs), default=None),
           "refusal_p99_ms": max((r["refusal_p99_ms"] or 0 for r in runs), default=None),
           "serve_5xx": sum(n for r in runs for s, n in r["statuses"].items() if s >= 500 and s != 503)}
    if compare:
        runs = bursts_against(endpoint, compare, bursts, qps, capacity_clients // 2, f"overload {json.dumps(compare)}")
        out["compared"] = {"args": compare, "bursts": runs}
    return out


# --------------------------------------------------------------------------- the run


PARTS = ("teacher", "train", "eval", "serve", "autoscale", "overload")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--out", default="runs/chaos", help="local folder for the plot and the full result")
    p.add_argument("--serve-seconds", type=float, default=300)
    p.add_argument("--serve-clients", type=int, default=4)
    p.add_argument("--ramp-step-s", type=float, default=15)
    p.add_argument("--downscale-delay-s", type=float, default=30)
    p.add_argument("--bursts", type=int, nargs="+", default=[64, 256])
    p.add_argument("--compare", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="overload: also burst the default app with these ServeAppArgs fields (YAML values), "
                        "e.g. model_nice=0")
    p.add_argument("--direct-ingress", action="store_true",
                   help="start the nodes with Ray Serve's direct ingress: no proxy in front of the ingress")
    args = p.parse_args()
    compare = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.compare)}

    from kard_ray.config import load_config
    from kard_ray.fs import upload_file
    from kard_ray.loopback import LoopbackCluster, S3Server, free_port, isolation_problem
    from kard_ray.synth import generate_world, write_world
    from kard_ray.teacher.reference_server import ReferenceTeacherProcess, ServerOptions
    from serve.direct_ingress import direct_ingress_env

    problem = isolation_problem()
    if problem:
        sys.exit(f"worker nodes cannot get a disk of their own here: {problem}")
    print(json.dumps(cpu_info()), flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    t0 = time.perf_counter()
    with S3Server(out_dir / "moto.log") as s3:
        os.environ.update(s3.env())
        s3.filesystem().create_dir(BUCKET)
        world_dir = write_world(generate_world(load_config(None, [f"data.synth.{k}={v}" for k, v in WORLD.items()])
                                               .data.synth), out_dir / "world")
        for name in ("train.jsonl", "test.jsonl", "kb.jsonl"):
            upload_file(str(world_dir / name), f"s3://{BUCKET}/data/{name}")
        ingress = direct_ingress_env(free_port()) if args.direct_ingress else {}
        with LoopbackCluster(workers=2, cpus_per_worker=3, env={**s3.env(), "HF_HUB_OFFLINE": "1", **ingress}) \
                as cluster, \
                ReferenceTeacherProcess(world_dir, ServerOptions(latency_ms=800)) as calm, \
                ReferenceTeacherProcess(world_dir, ServerOptions(latency_ms=800)) as storm:
            chaos = Chaos(cluster, s3, {"calm": calm, "storm": storm})
            if "teacher" in args.parts:
                result["teacher"] = part_teacher(chaos)
            if "train" in args.parts:
                result["train"] = part_train(chaos)
            if "eval" in args.parts:
                result["eval"] = part_eval(chaos)
            elif {"serve", "autoscale", "overload"} & set(args.parts):
                chaos.finish(chaos.submit("run", "calm"))  # the run the endpoint serves
            if "serve" in args.parts:
                result["serve"] = part_serve(chaos, args.serve_seconds, 40, args.serve_clients)
            if "autoscale" in args.parts:
                result["autoscale"] = part_autoscale(chaos, out_dir, args.ramp_step_s, args.downscale_delay_s)
            if "overload" in args.parts:
                result["overload"] = part_overload(chaos, args.bursts, 16, compare)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "chaos.json").write_text(json.dumps(result, indent=1))

    def get(part: str, key: str):
        return result.get(part, {}).get(key)

    emit({"benchmark": "chaos", **cpu_info(), "direct_ingress": args.direct_ingress,
          "teacher_billed_twice": (get("teacher", "storm") or {}).get("billed_twice"),
          "teacher_identical": get("teacher", "identical"),
          "train_resumed_from_step": get("train", "resumed_from_step"),
          "eval_identical": get("eval", "identical"),
          "serve_5xx": (get("serve", "serve_5xx") or 0) + (get("autoscale", "serve_5xx") or 0)
          + (get("overload", "serve_5xx") or 0),
          "serve_success_after_kill": get("serve", "success_after_loss"),
          "serve_success_once_recovered": get("serve", "success_once_recovered"),
          "serve_recovery_s": get("serve", "recovery_s"),
          "autoscale_max_replicas": get("autoscale", "max_replicas"),
          "autoscale_up_s": get("autoscale", "scale_up_s"),
          "autoscale_back_to_min_s": get("autoscale", "back_to_min_s"),
          "overload_goodput_ratio": get("overload", "goodput_ratio"),
          "refusal_p99_ms": get("overload", "refusal_p99_ms"),
          "seconds": result["seconds"]})


if __name__ == "__main__":
    main()
