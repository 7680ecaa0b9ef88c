"""One way to get a Ray runtime, used by every entrypoint (CLI, jobs, tests).

- With an address (``--address``, the config's ``ray.address`` or ``RAY_ADDRESS``, which
  ``ray job submit`` sets for the driver) we attach and request no resources: the cluster owns them.
- Without one we start an embedded Ray sized for this machine. Logical CPUs are over-provisioned
  (2x cores, at least 4) because Ray Train workers otherwise starve Ray Data of CPU slots on a
  small machine; the object store is capped so that tests and laptops keep their memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from contextvars import ContextVar
from dataclasses import dataclass

from kard_ray.config import RayConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayRuntime:
    """What init_ray connected to."""

    mode: str  # "embedded" | "attached" | "existing"
    address: str
    cpus: float


def resolve_address(cfg: RayConfig | None = None, address: str | None = None) -> str | None:
    """The cluster to attach to, in order of precedence: argument, config, RAY_ADDRESS."""
    return address or (cfg.address if cfg else None) or os.environ.get("RAY_ADDRESS") or None


def machine_cores() -> int:
    """CPU cores this process may use (the affinity mask, e.g. a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def serve_model_threads(cfg: RayConfig | None = None, address: str | None = None) -> int:
    """Torch threads for each Serve model replica: on an embedded Ray every core of the machine (a request's models
    run one after the other), on a cluster 0, which means the CPUs the replica reserves (a shared node)."""
    return 0 if resolve_address(cfg, address) else machine_cores()


def lower_cpu_priority(nice: int) -> int:
    """Every thread of this process to at least niceness ``nice``; returns how many changed (0 off Linux).

    A model replica's compute then yields the cores to the request path beside it (Serve's proxy, the ingress,
    health checks; Ray starts every worker at niceness 15, ``RAY_worker_niceness``), so on a node busy with model
    work a refusal or a route waits less for a core. Linux keeps niceness per thread and a new thread takes its
    creator's, so calling this once per batch covers the thread pools a model starts lazily."""
    if nice <= 0 or not os.path.isdir("/proc/self/task"):
        return 0
    changed = 0
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except OSError:  # the thread ended meanwhile
            continue
    return changed


_STAGE_CORES: ContextVar[int | None] = ContextVar("kard_stage_cores", default=None)


def stage_cores() -> int:
    """The cores the running stage may use: the whole machine, or its share while other stages run beside it."""
    return _STAGE_CORES.get() or machine_cores()


@contextlib.contextmanager
def sharing_cores(cores: int):
    """Within this block (this thread), ``stage_cores()`` is ``cores``: the pipeline gives each stage it runs
    at once its share, and every worker and actor the stage starts is sized from it."""
    token = _STAGE_CORES.set(max(1, cores))
    try:
        yield
    finally:
        _STAGE_CORES.reset(token)


def concurrent_stages(configured: int | None, embedded: bool) -> int:
    """Stages the pipeline runs at once when they do not need each other: the configured number, else on an
    embedded Ray one per two cores (at most 4: the reranker and three students), else (a cluster) 4.

    Two cores make one lane: on the 2-core demo machine, the reranker and a student side by side with one
    thread each took as long as the two in turn with two threads (docs/benchmarks.md)."""
    if configured:
        return configured
    return max(1, min(4, machine_cores() // 2)) if embedded else 4


def cores_per_worker(configured: float | None, workers: int, embedded: bool, cores: int | None = None) -> float:
    """CPUs for each of ``workers`` (training workers, generation actors): the configured number, else on an
    embedded Ray the stage's cores (``stage_cores``) shared among them, else (a cluster) one each."""
    if configured is not None:
        return configured
    if not embedded:
        return 1.0
    return float(max(1, (cores or stage_cores()) // max(1, workers)))


def is_embedded() -> bool:
    """Whether this process started the Ray it uses (so its machine is the whole cluster)."""
    return _MODE.get("mode") == "embedded"


def use_assigned_cores() -> int:
    """Torch threads = the CPUs Ray assigned to this worker or actor (Ray's default is its own guess); returns them."""
    import ray
    import torch

    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, min(int(assigned), machine_cores()))
    torch.set_num_threads(threads)
    return threads


_MODE: dict[str, str] = {}


def embedded_cpus(cfg: RayConfig | None = None) -> int:
    if cfg is not None and cfg.num_cpus:
        return cfg.num_cpus
    return max(4, 2 * (os.cpu_count() or 1))


def route_logs_to_file(path: str) -> None:
    """Library logs (Ray, Ray Data, Ray Train, transformers, warnings) go to ``path``, not to the console,
    which is left to the progress view. Ray's own process logs stay in its session folder (see ``ray_log_dir``)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    for name in ("", "ray", "ray.data", "ray.train", "ray.serve", "ray.tune", "transformers", "py.warnings"):
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                  and not isinstance(h, logging.FileHandler)]:
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)


def ray_log_dir() -> str | None:
    """The running Ray session's log folder (every Ray process's logs), when this process started one."""
    try:
        from ray._private import worker

        return os.path.join(worker._global_node.get_session_dir_path(), "logs")
    except Exception:  # attached to a remote cluster, or no Ray
        return None


def _lanes_system_config(lanes: int) -> dict:
    """With stages side by side, two Ray Train runs keep ~15 helper processes alive (controllers, dataset managers,
    split coordinators), and the raylet prints a warning on the console from 4x its start-up limit (one process
    per core). Raising the limit to 4 per lane keeps the console quiet; it also lets that many processes start
    at once. One lane keeps Ray's default."""
    return {"_system_config": {"worker_maximum_startup_concurrency": 4 * lanes}} if lanes > 1 else {}


def init_ray(cfg: RayConfig | None = None, address: str | None = None, log_to_driver: bool = True) -> RayRuntime:
    """Attach to a cluster when one is named, else start (or reuse) an embedded local Ray. ``log_to_driver=False``
    keeps worker output off this console (it stays in Ray's session logs)."""
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayRuntime("existing", ctx.gcs_address, ray.cluster_resources().get("CPU", 0.0))

    target = resolve_address(cfg, address)
    # Keep the driver's logs readable: Ray Data's per-operator progress bars stay on.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if target:
        ray.init(address=target, namespace=cfg.namespace, log_to_driver=log_to_driver)
        mode = "attached"
    else:
        ray.init(
            address="local",  # a new instance even where a stale or running `ray start` left its address in /tmp/ray
            num_cpus=embedded_cpus(cfg),
            **({"num_gpus": cfg.num_gpus} if cfg.num_gpus is not None else {}),
            _node_ip_address="127.0.0.1",  # an embedded Ray stays on loopback
            object_store_memory=cfg.object_store_memory_mb * 1024 * 1024,
            include_dashboard=cfg.include_dashboard,
            **({"_metrics_export_port": cfg.metrics_export_port} if cfg.metrics_export_port else {}),
            **_lanes_system_config(concurrent_stages(cfg.concurrent_stages, True)),
            namespace=cfg.namespace,
            log_to_driver=log_to_driver,
            configure_logging=log_to_driver,  # quiet: keep the handlers route_logs_to_file set
            logging_level=logging.WARNING,
        )
        mode = "embedded"
    ctx = ray.get_runtime_context()
    runtime = RayRuntime(mode, ctx.gcs_address, ray.cluster_resources().get("CPU", 0.0))
    _MODE["mode"] = mode
    log.info("ray %s at %s with %.0f CPUs", runtime.mode, runtime.address, runtime.cpus)
    return runtime


def cluster_nodes(cfg: RayConfig | None = None, address: str | None = None) -> int:
    """Alive nodes of the Ray this process runs on: attaches when a cluster is named; an embedded Ray, running
    or not (none is started for this), is one node."""
    import ray

    if not ray.is_initialized():
        if resolve_address(cfg, address) is None:
            return 1
        init_ray(cfg, address)
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
