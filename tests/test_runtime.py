import os
import subprocess
import sys
import textwrap

import pytest

from kard_ray.config import RayConfig
from kard_ray.runtime import (
    concurrent_stages,
    cores_per_worker,
    embedded_cpus,
    machine_cores,
    resolve_address,
    serve_model_threads,
    sharing_cores,
    stage_cores,
)


def test_address_precedence(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(RayConfig()) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(RayConfig()) == "10.0.0.1:6379"
    assert resolve_address(RayConfig(address="cfg:1")) == "cfg:1"
    assert resolve_address(RayConfig(address="cfg:1"), "arg:2") == "arg:2"


def test_serve_model_replicas_get_every_core_only_when_embedded(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("kard_ray.runtime.machine_cores", lambda: 8)
    assert serve_model_threads(RayConfig()) == 8  # kard serve starts its own Ray: the machine is the cluster
    assert serve_model_threads(RayConfig(address="cfg:1")) == 0  # a shared node: the replica's reserved CPUs
    assert serve_model_threads(RayConfig(), "arg:2") == 0
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert serve_model_threads(RayConfig()) == 0


def test_embedded_cpus_over_provision():
    assert embedded_cpus(RayConfig(num_cpus=3)) == 3
    assert embedded_cpus(RayConfig()) >= 4


@pytest.mark.parametrize("configured, workers, embedded, cores, expected", [
    (None, 1, True, 16, 16.0),   # a laptop: one training worker or generation actor gets every core
    (None, 2, True, 16, 8.0),    # shared among workers
    (None, 3, True, 2, 1.0),     # never below one
    (None, 1, False, 16, 1.0),   # a cluster: its nodes' cores are not this machine's
    (2.5, 4, True, 16, 2.5),     # configured wins
])
def test_cores_per_worker_derivation(configured, workers, embedded, cores, expected):
    assert cores_per_worker(configured, workers, embedded, cores) == expected


def test_machine_cores_default_is_this_machine():
    assert cores_per_worker(None, 1, True) == float(machine_cores()) >= 1


def test_a_stage_sharing_the_machine_sizes_its_workers_from_its_share():
    assert stage_cores() == machine_cores()
    with sharing_cores(1):
        assert stage_cores() == 1 and cores_per_worker(None, 1, True) == 1.0
        assert cores_per_worker(None, 1, False) == 1.0 and cores_per_worker(3.0, 1, True) == 3.0
    assert stage_cores() == machine_cores()


def test_concurrent_stages_derivation(monkeypatch):
    import kard_ray.runtime as runtime

    assert concurrent_stages(3, True) == 3 and concurrent_stages(None, False) == 4
    for cores, lanes in ((1, 1), (2, 1), (4, 2), (16, 4)):
        monkeypatch.setattr(runtime, "machine_cores", lambda c=cores: c)
        assert concurrent_stages(None, True) == lanes


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.getpriority(os.PRIO_PROCESS, 0) > 14,
                    reason="niceness per thread is Linux's; this process is already near the lowest priority")
def test_lower_cpu_priority_reaches_every_thread_and_the_threads_started_later():
    # in a child process: niceness only goes up without privileges, so the test process keeps its own
    script = textwrap.dedent("""
        import os, threading
        from kard_ray.runtime import lower_cpu_priority
        ready, stop = threading.Event(), threading.Event()
        def wait():
            ready.set()
            stop.wait()
        earlier = threading.Thread(target=wait, daemon=True)  # an error below must not leave it holding the exit
        earlier.start()
        ready.wait()
        target = os.getpriority(os.PRIO_PROCESS, 0) + 5  # above whatever this process started with
        changed = lower_cpu_priority(target)
        later = {}
        own = lambda: later.update(nice=os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        t = threading.Thread(target=own)
        t.start(); t.join()
        nices = {}
        for tid in map(int, os.listdir("/proc/self/task")):
            try:
                nices[tid] = os.getpriority(os.PRIO_PROCESS, tid)
            except ProcessLookupError:  # a joined thread's task can linger in the listing a moment
                pass
        stop.set()
        print(target, changed, nices[earlier.native_id], nices[threading.get_native_id()], later["nice"],
              lower_cpu_priority(target), lower_cpu_priority(target - 3))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    target, changed, earlier, main, later, again, lower = map(int, out)
    assert changed >= 2 and earlier == main == later == target
    assert again == 0 and lower == 0  # idempotent; never lowers a niceness already higher


@pytest.mark.ray
def test_init_ray_embedded_and_reused(ray_session):
    import ray

    from kard_ray.runtime import init_ray

    assert ray_session.mode in ("embedded", "existing") and ray_session.cpus >= 4
    assert init_ray().mode == "existing"
    assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
