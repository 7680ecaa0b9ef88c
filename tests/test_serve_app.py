"""The answer service over real HTTP on 127.0.0.1 against a tiny finished run: answers, 4xx, auth, openai."""

import json
import urllib.error
import urllib.request

import openai
import pytest
from conftest import served_apps

pytestmark = pytest.mark.ray




def post(url: str, body, headers=None, raw: bytes | None = None) -> tuple[int, dict, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw = err.read() or b"{}"
        try:
            return err.code, json.loads(raw), dict(err.headers)
        except json.JSONDecodeError:
            return err.code, {"raw": raw.decode(errors="replace")}, dict(err.headers)


@pytest.fixture(scope="module")
def service(tiny_pipeline):
    from serve.app import ServeAppArgs, build_app, build_graph

    _, run, _ = tiny_pipeline
    short = {"max_new_tokens": 8}
    apps = {
        "open": build_app(ServeAppArgs(run_dir=run.path(), overrides={"max_new_tokens": 16}, max_question_chars=300,
                                       model_cpus=0.5, model_nice=19)),
        "locked": build_graph(ServeAppArgs(run_dir=run.path(), overrides=short, api_key_env="KARD_TEST_KEY",
                                           model_cpus=0.5, use_reranker=False),
                              ingress_runtime_env={"env_vars": {"KARD_TEST_KEY": "s3cret"}}),
        "tight": build_app(ServeAppArgs(run_dir=run.path(), overrides=short, use_reranker=False, model_cpus=0.5,
                                        max_batch_size=1, max_ongoing_requests=1, max_queued_requests=1)),
    }
    with served_apps(apps) as base:
        yield base, run


def test_answer_has_passages_and_timings(service):
    base, run = service
    from kard_ray.stages.data import read_split

    q = read_split(run, "test")[0]
    status, body, _ = post(f"{base}/open/v1/answer", {"question": q.question, "options": q.options, "top_k": 2})
    assert status == 200, body
    assert len(body["passages"]) == 2 and set(body["timings_ms"]) == {"retrieve", "rerank", "generate"}
    assert all(p["rerank_score"] is not None and p["pid"] for p in body["passages"])
    assert len({p["pid"] for p in body["passages"]}) == 2  # one per hop (the tiny reranker has hops=2)
    assert body["answer"] is None or body["answer"] in q.options or isinstance(body["answer"], str)
    with urllib.request.urlopen(f"{base}/open/healthz", timeout=30) as resp:
        health = json.loads(resp.read())
    assert health["ok"] is True and health["overrides"] == {"max_new_tokens": 16}
    assert health["settings"]["max_new_tokens"] == 16 and health["settings"]["hops"] == 2


@pytest.mark.parametrize("body, status", [
    ({"question": ""}, 422),
    ({"question": "   "}, 422),
    ({"question": "x" * 301}, 413),
    ({"question": "Who?", "options": [1, 2]}, 422),
    ({"question": "Who?", "options": "A, B"}, 422),
    ({"question": "Who?", "options": ["only one"]}, 422),
    ({"question": "Who?", "surprise": True}, 422),
    ({"question": "Who?", "top_k": 0}, 422),
    ({"options": ["a", "b"]}, 422),
])
def test_bad_input_gets_a_4xx_with_a_reason(service, body, status):
    base, _ = service
    got, payload, _ = post(f"{base}/open/v1/answer", body)
    assert got == status and payload.get("detail"), payload


def test_malformed_json_is_a_4xx(service):
    base, _ = service
    got, _, _ = post(f"{base}/open/v1/answer", None, raw=b"{not json")
    assert got == 422


def test_bearer_key_when_configured(service):
    base, _ = service
    body = {"question": "Where was Vythtraind Vreindvy born?", "options": ["a", "b"], "return_passages": False}
    assert post(f"{base}/locked/v1/answer", body)[0] == 401
    assert post(f"{base}/locked/v1/answer", body, {"Authorization": "Bearer wrong"})[0] == 401
    status, payload, _ = post(f"{base}/locked/v1/answer", body, {"Authorization": "Bearer s3cret"})
    assert status == 200 and payload["passages"] == [] and payload["timings_ms"]["rerank"] >= 0


def test_chat_completions_answer_the_openai_client(service):
    base, _ = service
    client = openai.OpenAI(base_url=f"{base}/open/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["kard-student-kard"]
    resp = client.chat.completions.create(
        model="kard-student-kard",
        messages=[{"role": "user", "content": "What is Buxholm known for?\n(A) salt\n(B) wool"}])
    assert resp.choices[0].message.role == "assistant" and isinstance(resp.choices[0].message.content, str)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="kard-student-kard", messages=[])


def test_chat_takes_content_as_a_list_of_text_parts(service):
    base, _ = service
    client = openai.OpenAI(base_url=f"{base}/open/v1", api_key="unused", max_retries=0, timeout=120)
    question = "What is Buxholm known for?\n(A) salt\n(B) wool"
    as_string = client.chat.completions.create(model="kard-student-kard",
                                               messages=[{"role": "user", "content": question}])
    as_parts = client.chat.completions.create(model="kard-student-kard", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is Buxholm known for?"}, {"type": "text", "text": "(A) salt\n(B) wool"}]}])
    assert as_parts.choices[0].message.content == as_string.choices[0].message.content  # the same question
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="kard-student-kard", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    assert refused.value.response.json()["detail"] == "only text content parts are supported, not image_url"


def test_chat_streams_to_the_openai_client_with_real_usage(service):
    base, run = service
    from kard_ray.fs import local_copy
    from kard_ray.student.model import load_student_tokenizer

    client = openai.OpenAI(base_url=f"{base}/open/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What is Buxholm known for?\n(A) salt\n(B) wool"}]
    whole = client.chat.completions.create(model="kard-student-kard", messages=messages)
    stream = client.chat.completions.create(model="kard-student-kard", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content  # greedy: the same answer either way
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    usage = chunks[-1].usage
    tok = load_student_tokenizer(local_copy(run.uri_of("student_kard")), "causal")
    completion_tokens = len(tok(whole.choices[0].message.content, add_special_tokens=False)["input_ids"])
    assert usage.completion_tokens == whole.usage.completion_tokens == completion_tokens > 0
    assert whole.usage.prompt_tokens > completion_tokens
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + completion_tokens


def test_chat_honours_max_tokens_and_refuses_sampling_it_cannot_do(service):
    base, _ = service
    client = openai.OpenAI(base_url=f"{base}/open/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What is Buxholm known for?\n(A) salt\n(B) wool"}]
    short = client.chat.completions.create(model="kard-student-kard", messages=messages, max_tokens=2)
    assert short.usage.completion_tokens <= 2 and short.choices[0].finish_reason == "length"
    for field in ({"temperature": 0.8}, {"n": 2}, {"top_p": 0.5}, {"logprobs": True}, {"stop": ["\n"]}):
        with pytest.raises(openai.UnprocessableEntityError) as err:
            client.chat.completions.create(model="kard-student-kard", messages=messages, **field)
        reason = err.value.response.json()["detail"]
        assert "not supported" in reason or "greedily" in reason
    assert client.chat.completions.create(model="kard-student-kard", messages=messages, temperature=0,
                                          max_tokens=4).choices[0].message.role == "assistant"


def test_split_options_reads_lettered_lines():
    from kard_ray.answers import split_options

    assert split_options("Q?\n(A) x\n(B) y") == ("Q?", ["x", "y"])
    assert split_options("Just a question") == ("Just a question", [])


def test_overload_is_503_with_retry_after_never_500(service):
    from concurrent.futures import ThreadPoolExecutor

    base, _ = service
    body = {"question": "Where was Vythtraind Vreindvy born?", "options": ["a", "b"], "return_passages": False}
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: post(f"{base}/tight/v1/answer", body), range(16)))
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, results
    rejected = [(p, h) for s, p, h in results if s == 503]
    assert all({k.lower(): v for k, v in h.items()}.get("retry-after") and "overloaded" in p.get("detail", "")
               for p, h in rejected), rejected


def test_model_replicas_compute_below_the_request_paths_priority(service):
    # model_nice=19 (Ray starts workers at 15): the models yield the cores to the proxy and the ingress
    import os
    import re
    from pathlib import Path

    base, _ = service
    post(f"{base}/open/v1/answer", {"question": "Who?"})  # a batch has run: every thread of the model is reniced
    nice = {}
    for proc in Path("/proc").iterdir():  # Ray titles a replica's process "ray::ServeReplica:<app>:<deployment>",
        try:  # with ".<method>" while it runs one
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            if found := re.match(r"ray::ServeReplica:open:(\w+)", title):
                nice[found.group(1)] = os.getpriority(os.PRIO_PROCESS, int(proc.name))
        except (OSError, ValueError):
            continue
    assert nice.get("Generator") == nice.get("RerankerModel") == 19, nice
    assert nice["KardService"] < 19 and nice["Retriever"] < 19, nice


def test_direct_ingress_answers_from_the_ingress_replica_itself_as_the_proxied_app_does(service, tmp_path):
    """`kard serve --direct-ingress` (its own embedded Ray): the asked port is the ingress replica's own socket,
    no Serve proxy between; it answers what the app behind the proxy answers, and streams. SIGTERM stops it all."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from conftest import REPO, free_port

    from kard_ray.stages.data import read_split

    base, run = service
    q = read_split(run, "test")[1]
    body = {"question": q.question, "options": q.options, "return_passages": False}
    port, log = free_port(), tmp_path / "serve.log"
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "COLUMNS": "400"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kard_ray.cli", "serve", run.path(), "--direct-ingress", "--port", str(port),
             "--override", "max_new_tokens=16", "--model-threads", "1"],  # the "open" app's settings and threads
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while f"at {url} " not in log.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(1)
        assert f"at {url} " in log.read_text(), log.read_text()[-4000:]
        listener = next(c.pid for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port)
        assert "ServeReplica:kard:KardService" in " ".join(psutil.Process(listener).cmdline())
        status, got, _ = post(f"{url}/v1/answer", body)
        assert status == 200, got
        want = post(f"{base}/open/v1/answer", body)[1]
        assert (got["answer"], got["rationale"]) == (want["answer"], want["rationale"])
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": f"{q.question}\n(A) {q.options[0]}\n(B) {q.options[1]}"}]
        whole = client.chat.completions.create(model="kard-student-kard", messages=messages)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="kard-student-kard", messages=messages, stream=True) if c.choices)
        assert streamed == whole.choices[0].message.content  # server-sent events from the replica itself
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-4000:]
