"""The OpenAI chat-completions facade of the answer service: request type, what it cannot honour, and the
response as one JSON body or as server-sent events (``stream: true``) that OpenAI clients read as a stream.

The student decodes as the run was evaluated (greedy, or self-consistency), so sampling fields that would
change that are refused with 422 and a reason instead of being silently ignored.
"""

# No `from __future__ import annotations`: FastAPI must see the request models as classes.
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ContentPart(BaseModel):
    """One part of a message's content in the list form (``[{"type": "text", "text": "..."}]``) that the OpenAI
    API accepts and SDK wrappers and gateways send."""

    model_config = ConfigDict(extra="allow")  # image_url, input_audio, ...: named in the 422, not dropped silently

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    @property
    def text(self) -> str:
        """The content as text: a string as it is, text parts joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    @property
    def non_text_parts(self) -> list[str]:
        return [] if isinstance(self.content, str) else [p.type for p in self.content if p.type != "text"]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # metadata, user, store, ...: nothing they ask changes an answer

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def unsupported(req: ChatRequest, decoding: str) -> str | None:
    """Why this service cannot honour ``req`` as asked, or None."""
    other_parts = sorted({t for m in req.messages for t in m.non_text_parts})
    checks = [
        (bool(other_parts), f"only text content parts are supported, not {', '.join(other_parts)}"),
        (req.n not in (None, 1), "n > 1 is not supported: one answer per request"),
        (decoding == "greedy" and req.temperature not in (None, 0),
         "this service decodes greedily, as its run was evaluated: leave temperature out or set it to 0"),
        (req.top_p not in (None, 1), "top_p is not supported: the student decodes as its run was evaluated"),
        (bool(req.presence_penalty or req.frequency_penalty), "presence and frequency penalties are not supported"),
        (bool(req.logit_bias), "logit_bias is not supported"),
        (bool(req.logprobs or req.top_logprobs), "logprobs are not supported"),
        (bool(req.stop), "stop sequences are not supported: answers end at their answer line"),
        (bool(req.tools or req.functions), "tools and functions are not supported"),
        (req.response_format not in (None, {"type": "text"}), "only the text response format is supported"),
    ]
    return next((reason for failed, reason in checks if failed), None)


def _envelope(model: str, kind: str, ident: str) -> dict[str, Any]:
    return {"id": ident, "object": kind, "created": int(time.time()), "model": model}


def completion(model: str, content: str, usage: dict[str, int], finish_reason: str) -> dict[str, Any]:
    """A ``chat.completion`` body."""
    return {**_envelope(model, "chat.completion", f"chatcmpl-{uuid.uuid4().hex[:24]}"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": usage}


def stream_events(model: str, content: str, usage: dict[str, int], finish_reason: str,
                  include_usage: bool) -> Iterator[str]:
    """``chat.completion.chunk`` events: the role, the content line by line, the finish reason, the usage
    when asked for (``stream_options.include_usage``), then ``[DONE]``."""
    head = _envelope(model, "chat.completion.chunk", f"chatcmpl-{uuid.uuid4().hex[:24]}")

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in content.splitlines(keepends=True):
        yield event({"content": piece})
    yield event({}, finish_reason)
    if include_usage:
        yield event(None, usage=usage)
    yield "data: [DONE]\n\n"


def usage_of(out: dict[str, Any]) -> dict[str, int]:
    """OpenAI usage from a generator result (the student tokenizer's counts)."""
    prompt, completion_tokens = int(out["prompt_tokens"]), int(out["completion_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens}
