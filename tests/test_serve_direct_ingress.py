"""Where the answer service is reached: the proxies, or under Ray Serve's direct ingress the ingress replica."""

from __future__ import annotations

from serve.direct_ingress import SPAN, SWITCH, direct_ingress_env, http_targets, proxy_port, target_urls


def _group(app: str, protocol: str, *targets: tuple[str, int]) -> dict:
    return {"app_name": app, "protocol": protocol, "route_prefix": "/",
            "targets": [{"ip": ip, "port": port, "instance_id": "", "name": ""} for ip, port in targets]}


def test_the_ingress_replicas_are_the_apps_targets_under_direct_ingress():
    details = {"target_groups": [_group("kard", "gRPC", ("10.0.0.2", 40000)),
                                 _group("kard", "HTTP", ("10.0.0.2", 30000), ("10.0.0.3", 30000)),
                                 _group("teacher", "HTTP", ("10.0.0.4", 30001))]}
    assert http_targets(details, "kard") == [("10.0.0.2", 30000), ("10.0.0.3", 30000)]
    assert http_targets(details, "teacher") == [("10.0.0.4", 30001)]


def test_without_direct_ingress_the_proxies_serve_every_app():
    details = {"target_groups": [_group("", "RequestProtocol.HTTP", ("127.0.0.1", 8000))]}
    assert http_targets(details, "kard") == [("127.0.0.1", 8000)]
    assert http_targets({"target_groups": [_group("kard", "HTTP")]}, "kard") == []  # no replica running yet


def test_the_ingress_replicas_get_the_asked_port_and_the_next_ones_and_the_proxy_none_of_them():
    env = direct_ingress_env(8000)
    first, last = int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]), int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    assert env[SWITCH] == "1" and (first, last) == (8000, 8000 + SPAN - 1)
    assert not first <= proxy_port(8000) <= last


def test_servers_bound_to_one_address_are_reached_there_and_those_on_every_interface_at_the_node():
    targets = [("192.0.2.2", 30000)]
    assert target_urls(targets, "127.0.0.1") == ["http://127.0.0.1:30000"]
    assert target_urls(targets, "0.0.0.0") == ["http://192.0.2.2:30000"]
