"""One rate limit and one failure budget for every teacher client in the cluster.

``RateBudget`` holds the logic (requests/min and tokens/min as evenly spaced reservations,
Retry-After pauses, the failure budget) and is the Ray actor that all
Ray Data workers on all nodes share; ``ActorLimiter`` is the clients' async interface to it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class RateBudget:
    """Reservations spaced at 60/rpm seconds (and tokens at 60/tpm each): the rate never exceeds the limit."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, failure_budget: float = 1.0,
                 min_attempts: int = 20, clock=time.monotonic):
        self.rpm, self.tpm, self.failure_budget, self.min_attempts = rpm, tpm, failure_budget, min_attempts
        self.clock = clock
        self.next_request = self.next_token = 0.0
        self.ok = self.failed = 0
        self.failure_reasons: dict[str, int] = {}
        self.aborted: str | None = None
        self.pauses = 0

    def reserve(self, tokens: int = 0) -> float:
        """Book the next slot; returns how long the caller must wait before sending."""
        now = self.clock()
        start = now
        if self.rpm:
            start = max(start, self.next_request)
            self.next_request = start + 60.0 / self.rpm
        if self.tpm and tokens:
            start = max(start, self.next_token)
            self.next_token = max(self.next_token, now) + tokens * 60.0 / self.tpm
        return max(0.0, start - now)

    def adjust_tokens(self, delta: int) -> None:
        """Correct a token reservation once the real usage is known."""
        if self.tpm and delta:
            self.next_token += delta * 60.0 / self.tpm

    def pause(self, seconds: float) -> None:
        """A 429 with Retry-After: nobody sends until it has passed."""
        self.pauses += 1
        resume = self.clock() + seconds
        self.next_request = max(self.next_request, resume)
        self.next_token = max(self.next_token, resume)

    def record(self, ok: bool, reason: str | None = None) -> str | None:
        """Count a finished request; returns the abort reason once the failure budget is spent."""
        if ok:
            self.ok += 1
        else:
            self.failed += 1
            key = (reason or "unknown").split(":", 1)[0]
            self.failure_reasons[key] = self.failure_reasons.get(key, 0) + 1
        done = self.ok + self.failed
        if self.aborted is None and done >= self.min_attempts and self.failed / done > self.failure_budget:
            top = max(self.failure_reasons, key=self.failure_reasons.get)
            self.aborted = (f"teacher failure budget exceeded: {self.failed} of {done} requests failed "
                            f"(most often: {top}); check the endpoint, model name and API key")
        return self.aborted

    def record_many(self, ok: int, failures: list[str]) -> str | None:
        """Several results at once (clients flush counts in batches to keep actor calls rare)."""
        for _ in range(ok):
            self.record(True)
        for reason in failures:
            self.record(False, reason)
        return self.aborted

    def status(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed": self.failed, "failure_reasons": dict(self.failure_reasons),
                "aborted": self.aborted, "pauses": self.pauses}


class ActorLimiter:
    """Client side of the coordinator actor. Without rate limits, reservations cost no actor call,
    and successes are reported in batches; failures are reported at once (they may abort the run)."""

    FLUSH_EVERY = 32

    def __init__(self, actor, limited: bool = True):
        self.actor, self.limited = actor, limited
        self._ok = 0

    async def reserve(self, tokens: int) -> float:
        return await self.actor.reserve.remote(tokens) if self.limited else 0.0

    async def adjust_tokens(self, delta: int) -> None:
        if self.limited:
            await self.actor.adjust_tokens.remote(delta)

    async def pause(self, seconds: float) -> None:
        await self.actor.pause.remote(seconds)

    async def record(self, ok: bool, reason: str | None = None) -> str | None:
        if ok:
            self._ok += 1
            if self._ok < self.FLUSH_EVERY:
                return None
        return await self.flush([] if ok else [reason or "unknown"])

    async def flush(self, failures: list[str] | None = None) -> str | None:
        ok, self._ok = self._ok, 0
        return await self.actor.record_many.remote(ok, failures or [])


class LocalLimiter:
    """The same interface over a ``RateBudget`` in this process: the batch path runs on the driver and
    retries online from there, with no actor to share."""

    def __init__(self, budget: RateBudget):
        self.budget = budget

    async def reserve(self, tokens: int) -> float:
        return self.budget.reserve(tokens)

    async def adjust_tokens(self, delta: int) -> None:
        self.budget.adjust_tokens(delta)

    async def pause(self, seconds: float) -> None:
        self.budget.pause(seconds)

    async def record(self, ok: bool, reason: str | None = None) -> str | None:
        return self.budget.record(ok, reason)

    async def flush(self, failures: list[str] | None = None) -> str | None:
        return self.budget.record_many(0, failures or [])


async def sleep_until_reserved(limiter, tokens: int) -> None:
    delay = await limiter.reserve(tokens)
    if delay > 0:
        await asyncio.sleep(delay)
