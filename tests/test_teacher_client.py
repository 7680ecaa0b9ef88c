"""The teacher client and its limits against the reference teacher over real HTTP (no Ray needed)."""

import asyncio
from types import SimpleNamespace

import pytest

from kard_ray.credentials import Secret
from kard_ray.synth.world import load_world
from kard_ray.teacher.client import TeacherClient
from kard_ray.teacher.limits import ActorLimiter, RateBudget
from kard_ray.teacher.reference_server import ReferenceTeacherServer, ServerOptions


class InProcessActor:
    """Stands in for the coordinator's Ray actor handle: ``handle.method.remote(...)`` is awaitable."""

    def __init__(self, target):
        self.target = target

    def __getattr__(self, name):
        async def remote(*args, **kwargs):
            return getattr(self.target, name)(*args, **kwargs)
        return SimpleNamespace(remote=remote)


def _client(server, budget=None, key="k", retries=6, timeout=5.0):
    limiter = ActorLimiter(InProcessActor(budget or RateBudget()))
    return TeacherClient(server.base_url, "kard-reference-teacher", Secret(key), timeout_s=timeout,
                         max_retries=retries, limiter=limiter, backoff_base_s=0.01, backoff_max_s=0.05, seed=0)


def _messages(world_dir):
    q = next(iter(load_world(world_dir).questions.values()))
    return [{"role": "user", "content": f"Question: {q.question}"}]


def _complete(client, messages, n=2):
    async def go():
        try:
            return await client.complete(messages, n, {"temperature": 0.7, "max_tokens": 64}, 50)
        finally:
            await client.close()
    return asyncio.run(go())


@pytest.mark.parametrize("fault", ["429", "500", "timeout"])
def test_transient_faults_are_retried(tiny_world, fault):
    with ReferenceTeacherServer(tiny_world, ServerOptions(fault_rate=0.6, faults=(fault,), seed=3, stall_s=1.0,
                                                          retry_after_s=0.05)) as server:
        out = _complete(_client(server, timeout=0.3), _messages(tiny_world))
        stats = server.stats()
    assert out.ok and len(out.texts) == 2 and out.attempts > 1
    assert stats["billed_requests"] == 1 and stats["faults"][fault] == out.attempts - 1


def test_malformed_and_auth_errors_are_recorded_not_retried(tiny_world):
    with ReferenceTeacherServer(tiny_world, ServerOptions(fault_rate=1.0, faults=("malformed",))) as server:
        out = _complete(_client(server), _messages(tiny_world))
        assert not out.ok and out.error.startswith("unparseable response") and out.attempts == 1
    with ReferenceTeacherServer(tiny_world, ServerOptions(api_key="right")) as server:
        out = _complete(_client(server, key="wrong-key-123"), _messages(tiny_world))
        assert out.error.startswith("HTTP 401") and out.attempts == 1 and "wrong-key-123" not in out.error


def test_gives_up_after_max_retries(tiny_world):
    with ReferenceTeacherServer(tiny_world, ServerOptions(fault_rate=1.0, faults=("500",))) as server:
        out = _complete(_client(server, retries=2), _messages(tiny_world))
        assert out.error.startswith("gave up after 3 attempts") and server.stats()["requests"] == 3


def test_usage_is_counted(tiny_world):
    with ReferenceTeacherServer(tiny_world) as server:
        out = _complete(_client(server), _messages(tiny_world), n=3)
        stats = server.stats()
    assert out.completion_tokens == stats["completion_tokens"] > 0 and out.prompt_tokens == stats["prompt_tokens"]


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_rate_budget_spaces_requests_and_honours_pauses():
    clock = FakeClock()
    budget = RateBudget(rpm=600, clock=clock)  # one request per 0.1 s
    delays = [budget.reserve() for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    clock.t += 10
    assert budget.reserve() == 0.0
    budget.pause(2.0)
    assert budget.reserve() == pytest.approx(2.0)


def test_token_budget():
    clock = FakeClock()
    budget = RateBudget(tpm=6000, clock=clock)  # 100 tokens per second
    assert budget.reserve(100) == 0.0
    assert budget.reserve(100) == pytest.approx(1.0)
    budget.adjust_tokens(-100)  # the first request used fewer tokens than estimated
    assert budget.reserve(50) == pytest.approx(1.0)


def test_failure_budget_aborts_with_a_reason():
    budget = RateBudget(failure_budget=0.5, min_attempts=10)
    for _ in range(9):
        assert budget.record(False, "HTTP 401: Incorrect API key provided.") is None
    reason = budget.record(False, "HTTP 401: bad key")
    assert "failure budget exceeded" in reason and "HTTP 401" in reason and "API key" in reason
    ok = RateBudget(failure_budget=0.5, min_attempts=10)
    assert all(ok.record(i % 4 != 0, "HTTP 500") is None for i in range(40))  # 25% failures: fine
