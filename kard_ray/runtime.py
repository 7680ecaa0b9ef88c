"""One way to get a Ray runtime, used by every entrypoint (CLI, jobs, tests).

- With an address (``--address``, the config's ``ray.address`` or ``RAY_ADDRESS``, which
  ``ray job submit`` sets for the driver) we attach and request no resources: the cluster owns them.
- Without one we start an embedded Ray sized for this machine. Logical CPUs are over-provisioned
  (2x cores, at least 4) because Ray Train workers otherwise starve Ray Data of CPU slots on a
  small machine; the object store is capped so that tests and laptops keep their memory.
"""

from __future__ import annotations

import logging
import os
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


def embedded_cpus(cfg: RayConfig | None = None) -> int:
    if cfg is not None and cfg.num_cpus:
        return cfg.num_cpus
    return max(4, 2 * (os.cpu_count() or 1))


def init_ray(cfg: RayConfig | None = None, address: str | None = None) -> RayRuntime:
    """Attach to a cluster when one is named, else start (or reuse) an embedded local Ray."""
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayRuntime("existing", ctx.gcs_address, ray.cluster_resources().get("CPU", 0.0))

    target = resolve_address(cfg, address)
    # Keep the driver's logs readable: Ray Data's per-operator progress bars stay on.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if target:
        ray.init(address=target, namespace=cfg.namespace, log_to_driver=True)
        mode = "attached"
    else:
        ray.init(
            num_cpus=embedded_cpus(cfg),
            _node_ip_address="127.0.0.1",  # an embedded Ray stays on loopback
            object_store_memory=cfg.object_store_memory_mb * 1024 * 1024,
            include_dashboard=cfg.include_dashboard,
            namespace=cfg.namespace,
            log_to_driver=True,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
        mode = "embedded"
    ctx = ray.get_runtime_context()
    runtime = RayRuntime(mode, ctx.gcs_address, ray.cluster_resources().get("CPU", 0.0))
    log.info("ray %s at %s with %.0f CPUs", runtime.mode, runtime.address, runtime.cpus)
    return runtime


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
