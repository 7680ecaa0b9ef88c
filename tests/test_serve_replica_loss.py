"""The ingress when a model replica is lost mid-request (its node gone): the request is answered again on the
replicas left, and a second loss is a 503 with Retry-After, never a 500. Found by ``benchmarks/chaos.py``: a node
lost under load turned one in-flight request into a 500 (``ActorUnavailableError`` from the Generator).
Fast: the ingress class is driven directly, without Ray or models."""

import asyncio

import pytest
from fastapi import HTTPException
from ray.exceptions import ActorDiedError, ActorUnavailableError

from serve.app import AnswerRequest, KardService


class Counted:
    """Stands in for a Prometheus metric: keeps what was recorded."""

    def __init__(self):
        self.seen = []

    def inc(self, tags):
        self.seen.append(tags)

    def observe(self, value, tags):
        self.seen.append(tags)


class Ingress:
    """The ingress's request handling (its ASGI wrapper left out) over a pipeline that fails as told."""

    _with_timeout = KardService.func_or_class._with_timeout
    _answer_on_live_replicas = KardService.func_or_class._answer_on_live_replicas


def ingress(failures: list[Exception]) -> Ingress:
    """The ingress whose pipeline (retrieve, rerank, generate) raises ``failures`` in turn, then answers."""
    service = Ingress()
    service.timeout, service.admission = 30.0, None
    service.requests, service.latency = Counted(), Counted()
    service.calls = 0

    async def answer(req):
        service.calls += 1
        if failures:
            raise failures.pop(0)
        return {"answer": "B"}

    service._answer = answer
    return service


def lost() -> Exception:
    return ActorUnavailableError("The actor is temporarily unavailable: connection reset", None)


def test_a_request_whose_replica_is_lost_is_answered_on_the_replicas_left():
    service = ingress([lost()])
    out = asyncio.run(service._with_timeout(AnswerRequest(question="q"), "answer"))
    assert out == {"answer": "B"} and service.calls == 2
    assert service.requests.seen == [{"route": "answer", "status": "200"}]


@pytest.mark.parametrize("second", [lost(), ActorDiedError()])
def test_a_request_that_loses_replicas_twice_gets_503_with_retry_after(second):
    service = ingress([lost(), second])
    with pytest.raises(HTTPException) as err:
        asyncio.run(service._with_timeout(AnswerRequest(question="q"), "answer"))
    assert err.value.status_code == 503 and err.value.headers["Retry-After"] == "2"
    assert service.calls == 2 and service.requests.seen == [{"route": "answer", "status": "503"}]


def test_an_error_inside_a_model_is_not_retried():
    service = ingress([ValueError("a bug")])
    with pytest.raises(ValueError):
        asyncio.run(service._with_timeout(AnswerRequest(question="q"), "answer"))
    assert service.calls == 1
