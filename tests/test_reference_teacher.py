"""The reference teacher through the real openai client over real HTTP."""

import json
import time
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


def _batch_input(tiny_world, count=6, **body):
    qs = list(load_world(tiny_world).questions.values())[:count]
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "kard-reference-teacher", "n": 2, "temperature": 0.7,
                       "messages": [{"role": "user", "content": f"Question: {q.question}"}], **body}}
             for i, q in enumerate(qs)]
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def _submit(client, data, purpose="batch"):
    f = client.files.create(file=("requests.jsonl", data), purpose=purpose)
    return f, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                    metadata={"run": "test"})


def _lines(client, file_id):
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_batch_completes_after_its_delay_and_bills_then(serve, tiny_world):
    server, client = serve(batch_delay_s=0.5)
    data = _batch_input(tiny_world)
    f, batch = _submit(client, data)
    assert f.purpose == "batch" and f.bytes == len(data) and client.files.content(f.id).content == data
    assert batch.status == "validating" and batch.request_counts.total == 6 and batch.metadata == {"run": "test"}
    assert client.batches.retrieve(batch.id).status == "in_progress"
    assert server.stats()["billed_requests"] == 0  # nothing billed before the batch is processed
    time.sleep(0.6)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 6 and done.error_file_id is None
    out = _lines(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == [f"req-{i}" for i in range(6)]
    assert all(x["response"]["status_code"] == 200 and x["error"] is None and x["id"].startswith("batch_req_")
               for x in out)
    assert all(len(x["response"]["body"]["choices"]) == 2 for x in out)
    stats = server.stats()
    assert stats["batches_created"] == 1 and stats["batch_requests_billed"] == 6 == stats["unique_billed"]
    # the same request online is the same billed request: a client that pays twice is caught
    body = json.loads(data.splitlines()[0])["body"]
    online = client.chat.completions.create(**body)
    first = next(x for x in out if x["custom_id"] == "req-0")["response"]["body"]
    assert [c.message.content for c in online.choices] == [c["message"]["content"] for c in first["choices"]]
    assert server.stats()["duplicate_billed"] == 1
    assert [b.id for b in client.batches.list()] == [batch.id]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_batch_partial_failures_and_expiry(serve, tiny_world):
    server, client = serve(batch_delay_s=0, batch_fail_rate=0.5, batch_expire=1, seed=2)
    _, expired = _submit(client, _batch_input(tiny_world, 10))
    expired = client.batches.retrieve(expired.id)
    assert expired.status == "expired" and expired.output_file_id is None and expired.expired_at
    errors = _lines(client, expired.error_file_id)
    assert len(errors) == 10 and all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in errors)
    _, partial = _submit(client, _batch_input(tiny_world, 10))
    partial = client.batches.retrieve(partial.id)
    assert partial.status == "completed" and 0 < partial.request_counts.failed < 10
    failed = _lines(client, partial.error_file_id)
    assert all(x["response"]["status_code"] == 500 and x["error"] is None for x in failed)
    assert len(_lines(client, partial.output_file_id)) + len(failed) == 10
    stats = server.stats()
    assert stats["batches_expired"] == 1 and stats["batch_requests_billed"] == 10 - len(failed)
    assert stats["billed_requests"] == 10 - len(failed) and stats["batch_requests_failed"] == 10 + len(failed)


def test_batch_validation_cancel_and_unknown_ids(serve, tiny_world):
    server, client = serve(batch_delay_s=60, batch_max_requests=5)
    _, too_many = _submit(client, _batch_input(tiny_world, 6))
    assert too_many.status == "failed" and "at most 5" in too_many.errors.data[0].message
    _, bad = _submit(client, b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}\nnope\n')
    assert bad.status == "failed" and {e.line for e in bad.errors.data} == {1, 2}
    _, wrong_purpose = _submit(client, _batch_input(tiny_world, 2), purpose="user_data")
    assert wrong_purpose.status == "failed"
    _, slow = _submit(client, _batch_input(tiny_world, 3))
    cancelled = client.batches.cancel(slow.id)
    assert cancelled.status == "cancelled" and cancelled.request_counts.failed == 3
    assert {x["error"]["code"] for x in _lines(client, cancelled.error_file_id)} == {"batch_cancelled"}
    assert server.stats()["billed_requests"] == 0
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_unknown")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-unknown", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=slow.input_file_id, endpoint="/v1/embeddings", completion_window="24h")
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == [slow.id, wrong_purpose.id] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)][2:] == [bad.id, too_many.id]  # the client pages on
    assert server.stats()["batches_created"] == 4


def test_batch_endpoints_need_the_key(serve, tiny_world):
    server, _ = serve(api_key="right-key")
    wrong = OpenAI(base_url=server.base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.files.create(file=("r.jsonl", _batch_input(tiny_world, 1)), purpose="batch")
    with pytest.raises(openai.AuthenticationError):
        wrong.batches.list()
    right = OpenAI(base_url=server.base_url, api_key="right-key", max_retries=0)
    assert _submit(right, _batch_input(tiny_world, 1))[1].status == "validating"
