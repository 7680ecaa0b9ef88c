"""Admission control: refuse at the door a request the service cannot answer within its timeout.

Without it a burst larger than the service can finish in time waits out the timeout and is then dropped, and the
model time spent on it is lost: measured with the served demo run, 64 concurrent requests got 1 answer and
63 × 503 after 30.9 s. Here the ingress predicts when a new request would be answered, from what it measures
(the rate at which answers come back while requests are waiting, and the latency of a request that found the
service idle), and answers 503 with a Retry-After at once when that is later than the deadline, so the work
that is admitted finishes in time and a refused client knows when to come back.

Pure bookkeeping on the ingress's event loop: no locks, no Ray, unit-tested without a server.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    admitted: bool
    retry_after_s: float = 0.0  # for a refusal
    alone: bool = False  # admitted into an idle service: its latency is the base latency


class Admission:
    """``admit()`` before a request; ``finished(decision, ...)`` after an admitted one."""

    def __init__(self, timeout_s: float, headroom: float = 0.8, initial_limit: int = 8, samples: int = 64,
                 clock=time.monotonic):
        self.deadline = headroom * timeout_s  # what an admitted request may be predicted to take
        self.initial_limit = initial_limit  # requests in flight before anything has been measured
        self.clock = clock
        self.in_flight = 0
        self.base_s: float | None = None  # latency of a request admitted into an idle service
        self._gaps: deque[float] = deque(maxlen=samples)  # seconds between answers while the service stayed busy
        self._last_done: float | None = None

    @property
    def answers_per_s(self) -> float | None:
        """The service rate measured while requests waited (batches included), None before."""
        if len(self._gaps) >= 2 and sum(self._gaps) > 0:
            return len(self._gaps) / sum(self._gaps)
        return None

    def predicted_s(self) -> float | None:
        """When a request admitted now would be answered, or None while nothing has been measured."""
        rate = self.answers_per_s
        if rate is None:
            return None
        return (self.base_s or 0.0) + self.in_flight / rate

    def admit(self) -> Decision:
        """Take the request (counted in flight until :meth:`finished`) or refuse it with a Retry-After."""
        if self.in_flight > 0:  # an idle service always tries
            predicted = self.predicted_s()
            if predicted is None and self.in_flight >= self.initial_limit:
                return Decision(False, retry_after_s=1.0)
            if predicted is not None and predicted > self.deadline:
                return Decision(False, retry_after_s=float(max(1, math.ceil(predicted - self.deadline))))
        self.in_flight += 1
        return Decision(True, alone=self.in_flight == 1)

    def finished(self, decision: Decision, latency_s: float, answered: bool) -> None:
        """An admitted request has ended; ``answered``: it produced an answer (not a timeout or an error)."""
        now = self.clock()
        if answered:
            if decision.alone:
                self.base_s = latency_s if self.base_s is None else 0.8 * self.base_s + 0.2 * latency_s
            if self._last_done is not None:
                self._gaps.append(now - self._last_done)
            self._last_done = now
        self.in_flight = max(0, self.in_flight - 1)
        if self.in_flight == 0:  # idle from here: the next gap would count idle time as service time
            self._last_done = None
