"""Ray Serve's direct ingress (experimental in Ray 2.60): the ingress replica serves HTTP itself, no proxy between.

Serve's HTTP proxy is what bounds how fast a burst is refused on a small node: a no-op app that answers 503 took
p99 1.5-1.8 s to refuse 256 requests sent at once behind the proxy on 2 cores, and 0.38-0.45 s under direct
ingress (``benchmarks/refusal_floor.py``, docs/reliability.md). Ray reads the switch from the environment of the
processes it starts: it is set here before an embedded Ray starts; a cluster's nodes need it in their own
environment. Serve's details then name the ingress replicas, instead of the proxies, as the app's HTTP targets.
"""

from __future__ import annotations

import os
import time

SWITCH = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
SPAN = 16  # ports for ingress replicas on one node: a replacement starts while the replica it replaces drains


def direct_ingress_env(port: int, drain_s: float = 1.0) -> dict[str, str]:
    """The environment under which a Ray started afterwards serves each ingress replica on its own port from
    ``port`` up (the first replica on a node gets ``port``). A stopping ingress replica stays open ``drain_s``
    for a load balancer to deregister it (Ray's default, 30 s, would hold every Ctrl-C that long); with none in
    front, a second is enough."""
    return {SWITCH: "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + SPAN - 1),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s)}


def proxy_port(port: int) -> int:
    """Where Serve's proxy goes beside ingress replicas served from ``port``: Ray still starts one (it answers while
    no ingress replica runs), and it must not take the replicas' first port."""
    return port + SPAN


def enable_direct_ingress(port: int) -> int:
    """Turn direct ingress on for the Ray this process starts next (the app's first ingress replica listens on
    ``port``); returns the port to give Serve's proxy."""
    os.environ.update(direct_ingress_env(port))
    return proxy_port(port)


def http_targets(details: dict, app_name: str) -> list[tuple[str, int]]:
    """(ip, port) of what serves ``app_name`` over HTTP according to Serve's instance details (the REST API's
    JSON): its ingress replicas under direct ingress, else the proxies (the target group of every app)."""
    groups = [g for g in details.get("target_groups", []) if str(g.get("protocol")).upper().endswith("HTTP")]
    for wanted in (app_name, ""):
        for group in groups:
            if group.get("app_name", "") == wanted and group.get("targets"):
                return [(t["ip"], t["port"]) for t in group["targets"]]
    return []


def serving_urls(app_name: str, host: str, timeout_s: float = 60) -> list[str]:
    """``target_urls`` of ``app_name`` on the Serve instance this process is connected to, once Serve names one."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    deadline = time.monotonic() + timeout_s
    while not (targets := http_targets(client.get_serve_details(), app_name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return target_urls(targets, host)


def target_urls(targets: list[tuple[str, int]], host: str) -> list[str]:
    """Base URLs of ``http_targets`` whose servers bind ``host``: reached there, or at the node's IP when they
    listen on every interface (Serve names the node's IP even for a server bound to loopback)."""
    return [f"http://{ip if host in ('0.0.0.0', '::') else host}:{port}" for ip, port in targets]
