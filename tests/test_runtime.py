import pytest

from kard_ray.config import RayConfig
from kard_ray.runtime import embedded_cpus, resolve_address


def test_address_precedence(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(RayConfig()) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(RayConfig()) == "10.0.0.1:6379"
    assert resolve_address(RayConfig(address="cfg:1")) == "cfg:1"
    assert resolve_address(RayConfig(address="cfg:1"), "arg:2") == "arg:2"


def test_embedded_cpus_over_provision():
    assert embedded_cpus(RayConfig(num_cpus=3)) == 3
    assert embedded_cpus(RayConfig()) >= 4


@pytest.mark.ray
def test_init_ray_embedded_and_reused(ray_session):
    import ray

    from kard_ray.runtime import init_ray

    assert ray_session.mode in ("embedded", "existing") and ray_session.cpus >= 4
    assert init_ray().mode == "existing"
    assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
