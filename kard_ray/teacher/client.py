"""One teacher request with retries: the ``openai`` async client against any OpenAI-compatible endpoint.

Retried with exponential backoff and full jitter: 429 (honouring Retry-After, which also pauses
every other client through the shared limiter), 5xx, timeouts and connection errors. Not
retried, recorded with the reason: other 4xx (a wrong key, an unknown model) and responses that
cannot be parsed (a provider may have billed them; retrying could pay twice).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import openai

from kard_ray.credentials import Secret
from kard_ray.teacher.limits import sleep_until_reserved


@dataclass
class Outcome:
    texts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def estimate_tokens(text: str) -> int:
    """About four characters per token for English BPE vocabularies."""
    return max(1, len(text) // 4)


def read_completion(resp, n: int, out: Outcome) -> bool:
    """Put a chat completion's n texts and usage into ``out``; False (with ``out.error``) when it does not hold
    n non-empty choices. The online client and the batch path's output lines are read by this one check."""
    texts = [c.message.content for c in (resp.choices or []) if c.message is not None]
    if len(texts) != n or any(not isinstance(t, str) or not t.strip() for t in texts):
        out.error = f"unparseable response: expected {n} non-empty choices, got {len(texts)}"
        return False
    usage = resp.usage
    out.texts = texts
    out.prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
    out.completion_tokens = getattr(usage, "completion_tokens", 0) or 0
    return True


def _retry_after(err: openai.APIStatusError) -> float | None:
    try:
        value = err.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


class TeacherClient:
    def __init__(self, base_url: str | None, model: str, api_key: Secret, *, timeout_s: float, max_retries: int,
                 limiter, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0, seed: int | None = None):
        self.model, self.max_retries, self.limiter = model, max_retries, limiter
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key.reveal() or "unset",
                                          timeout=timeout_s, max_retries=0)
        self._key = api_key
        self._rng = random.Random(seed)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return self._rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt))

    async def complete(self, messages: list[dict[str, str]], n: int, sampling: dict[str, Any],
                       expected_completion_tokens: int) -> Outcome:
        prompt_est = sum(estimate_tokens(m["content"]) for m in messages)
        est = prompt_est + n * expected_completion_tokens
        out = Outcome()
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            out.attempts = attempt + 1
            await sleep_until_reserved(self.limiter, est)
            try:
                resp = await self._client.chat.completions.create(model=self.model, messages=messages, n=n,
                                                                  **sampling)
            except openai.RateLimitError as err:
                wait = _retry_after(err)
                if wait is not None:
                    await self.limiter.pause(wait)
                last = f"429 rate limited{f' (Retry-After {wait:g}s)' if wait is not None else ''}"
                await asyncio.sleep(max(wait or 0.0, self.backoff(attempt)))
                continue
            except (openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError) as err:
                last = describe_error(err)
                await asyncio.sleep(self.backoff(attempt))
                continue
            except openai.APIStatusError as err:
                out.error = describe_error(err)
                break
            except (ValueError, openai.APIResponseValidationError) as err:
                out.error = f"unparseable response: {type(err).__name__}"
                break
            if not read_completion(resp, n, out):
                break
            if out.prompt_tokens or out.completion_tokens:
                await self.limiter.adjust_tokens(out.prompt_tokens + out.completion_tokens - est)
            break
        else:
            out.error = f"gave up after {self.max_retries + 1} attempts; last: {last}"
        key = self._key.reveal()
        if out.error and key and key in out.error:  # a provider may echo the key back
            out.error = out.error.replace(key, "***")
        return out

    async def close(self) -> None:
        await self._client.close()


def describe_error(err: Exception) -> str:
    if isinstance(err, openai.APITimeoutError):
        return "timeout"
    if isinstance(err, openai.APIConnectionError):
        return "connection error"
    if isinstance(err, openai.APIStatusError):
        msg = ""
        try:
            body = err.body if isinstance(err.body, dict) else {}
            msg = (body.get("error") or body).get("message", "") if isinstance(body, dict) else ""
        except AttributeError:
            pass
        return f"HTTP {err.status_code}{': ' + msg if msg else ''}"
    return type(err).__name__
