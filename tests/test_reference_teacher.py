"""The reference teacher through the real openai client over real HTTP."""

import json
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

from kard_ray.synth.world import load_world
from kard_ray.teacher.reference_server import ReferenceTeacherServer, ServerOptions


@pytest.fixture()
def serve(tiny_world):
    servers = []

    def start(**options):
        server = ReferenceTeacherServer(tiny_world, ServerOptions(**options)).start()
        servers.append(server)
        return server, OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=5)

    yield start
    for s in servers:
        s.stop()


def _post(url, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _ask(client, q, **kw):
    return client.chat.completions.create(
        model="kard-reference-teacher",
        messages=[{"role": "system", "content": "You explain."},
                  {"role": "user", "content": f"Question: {q.question}\nOptions: {q.options}"}],
        **kw,
    )


def _question(tiny_world, hops=2):
    world = load_world(tiny_world)
    return next(q for q in world.questions.values() if q.metadata["hops"] == hops)


def test_models_and_n_and_usage(serve, tiny_world):
    server, client = serve()
    assert [m.id for m in client.models.list().data] == ["kard-reference-teacher"]
    q = _question(tiny_world)
    resp = _ask(client, q, n=5, temperature=1.0)
    assert len(resp.choices) == 5
    texts = [c.message.content for c in resp.choices]
    assert all(f"({q.answer_letter}) {q.answer_text}" in t for t in texts)
    assert len(set(texts)) > 1  # varied wording when sampling
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0
    town = server.teacher.world.chains[q.id][0][2]
    assert all(town in t for t in texts)  # the bridge entity is named: what rationale retrieval needs
    greedy = [_ask(client, q, n=2, temperature=0).choices[i].message.content for i in range(2)]
    assert greedy[0] == greedy[1]


def test_wrong_rationales_on_request(serve, tiny_world):
    _, client = serve(wrong_rate=1.0)
    q = _question(tiny_world, hops=1)
    for c in _ask(client, q, n=4, temperature=1.0).choices:
        assert f"({q.answer_letter})" not in c.message.content


def test_unknown_question_is_said_plainly(serve):
    _, client = serve()
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "What is 2+2?"}])
    assert "only knows the questions of its synthetic world" in resp.choices[0].message.content


def test_fault_429_carries_retry_after(serve, tiny_world):
    server, client = serve(fault_rate=1.0, faults=("429",), retry_after_s=7)
    with pytest.raises(openai.RateLimitError) as err:
        _ask(client, _question(tiny_world))
    assert err.value.response.headers["retry-after"] == "7"
    assert server.stats()["billed_requests"] == 0


def test_fault_500_and_malformed(serve, tiny_world):
    _, client = serve(fault_rate=1.0, faults=("500",))
    with pytest.raises(openai.InternalServerError):
        _ask(client, _question(tiny_world))
    server, client = serve(fault_rate=1.0, faults=("malformed",))
    status, body = _post(f"{server.base_url}/chat/completions",
                         json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode())
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises((openai.APIError, ValueError)):  # openai surfaces the body's JSONDecodeError
        _ask(client, _question(tiny_world))


def test_fault_timeout(serve, tiny_world):
    server, _ = serve(fault_rate=1.0, faults=("timeout",), stall_s=3)
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        _ask(client, _question(tiny_world))


def test_fault_rate_is_a_share(serve, tiny_world):
    server, client = serve(fault_rate=0.3, faults=("500",), seed=1)
    q = _question(tiny_world)
    failures = 0
    for i in range(60):
        try:
            _ask(client, q, seed=i)
        except openai.InternalServerError:
            failures += 1
    assert 8 <= failures <= 30
    stats = server.stats()
    assert stats["requests"] == 60 and stats["billed_requests"] == 60 - failures


def test_billing_counts_duplicates(serve, tiny_world):
    server, client = serve()
    q = _question(tiny_world)
    _ask(client, q, n=2)
    _ask(client, q, n=3)
    assert server.stats()["duplicate_billed"] == 0
    _ask(client, q, n=2)
    stats = server.stats()
    assert stats["duplicate_billed"] == 1 and stats["unique_billed"] == 2


def test_api_key_required_when_configured(serve, tiny_world):
    server, _ = serve(api_key="right-key")
    wrong = OpenAI(base_url=server.base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        _ask(wrong, _question(tiny_world))
    right = OpenAI(base_url=server.base_url, api_key="right-key", max_retries=0)
    assert _ask(right, _question(tiny_world)).choices


def test_bad_requests_are_4xx(serve):
    server, _ = serve()
    url = f"{server.base_url}/chat/completions"
    assert _post(url, b"{nope")[0] == 400
    assert _post(url, json.dumps({"messages": []}).encode())[0] == 400
    status, body = _post(url, json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 0}).encode())
    assert status == 400 and b"'n' must be" in body


def test_unknown_fault_kind_rejected():
    with pytest.raises(ValueError, match="unknown fault"):
        ServerOptions(faults=("404",))
