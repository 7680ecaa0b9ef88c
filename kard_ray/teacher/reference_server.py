"""The reference teacher: an OpenAI-compatible chat server that writes rationales for the synthetic world.

It is the demo's teacher and the test bed of the teacher client: it finds the world question in
the prompt, answers ``n`` rationales from the ground truth in varied wording (optionally a share of
wrong ones), reports token usage, and can inject latency and faults (429 with Retry-After, 500,
stalls, malformed bodies). It also emulates the Batch API (``reference_batches.py``: files and batches
endpoints, a completion delay, failures inside a batch, expired batches). It counts what it served and
what it billed, online and in batches alike, so tests can prove that no prompt was paid for twice. It
binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from kard_ray.synth.world import LoadedWorld, load_world
from kard_ray.teacher.reference_api import api_error, invalid_chat_body
from kard_ray.teacher.reference_batches import BatchStore
from kard_ray.teacher.reference_rationales import write_rationale

FAULT_KINDS = ("429", "500", "timeout", "malformed")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A whitespace-and-punctuation token count: close enough to BPE counts for accounting tests."""
    return len(_TOKEN.findall(text))


@dataclass
class ServerOptions:
    model: str = "kard-reference-teacher"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    retry_after_s: float = 1.0
    stall_s: float = 30.0
    wrong_rate: float = 0.0
    seed: int = 0
    api_key: str | None = None  # when set, requests must carry this bearer key
    batch_delay_s: float = 1.0  # a batch completes this long after it was created (read when polled)
    batch_fail_rate: float = 0.0  # share of a batch's requests that fail inside it (500 in the error file)
    batch_expire: int = 0  # the first N batches created expire: every request in the error file, batch_expired
    batch_max_requests: int = 50_000  # the provider's limits; a larger input file fails validation
    batch_max_bytes: int = 200_000_000

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if not all(0 <= r <= 1 for r in (self.fault_rate, self.wrong_rate, self.batch_fail_rate)):
            raise ValueError("fault_rate, wrong_rate and batch_fail_rate must be between 0 and 1")
        if self.batch_delay_s < 0 or self.batch_expire < 0:
            raise ValueError("batch_delay_s and batch_expire must not be negative")


@dataclass
class ServerStats:
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    billed: Counter = field(default_factory=Counter)  # request key -> times billed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    arrivals: deque = field(default_factory=lambda: deque(maxlen=100_000))  # monotonic arrival times
    last_done: float = 0.0
    batch_calls: Counter = field(default_factory=Counter)  # files / batches endpoint -> calls
    batches_created: int = 0
    batches_expired: int = 0
    batch_requests_billed: int = 0
    batch_requests_failed: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "faults": dict(self.faults),
            "billed_requests": sum(self.billed.values()),
            "unique_billed": len(self.billed),
            "duplicate_billed": sum(c - 1 for c in self.billed.values() if c > 1),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "peak_in_flight": self.peak_in_flight,
            "first_arrival": self.arrivals[0] if self.arrivals else None,
            "last_done": self.last_done or None,
            "batch_calls": dict(self.batch_calls),
            "batches_created": self.batches_created,
            "batches_expired": self.batches_expired,
            "batch_requests_billed": self.batch_requests_billed,
            "batch_requests_failed": self.batch_requests_failed,
        }

    def peak_rate_per_minute(self, window_s: float = 2.0) -> float:
        """The highest request arrival rate over any window of ``window_s`` seconds, per minute."""
        times = list(self.arrivals)
        best, j = 0, 0
        for i, t in enumerate(times):
            while t - times[j] > window_s:
                j += 1
            best = max(best, i - j + 1)
        return best * 60.0 / window_s


def request_key(body: dict[str, Any]) -> str:
    """What a provider would bill as 'the same request' twice."""
    fields = {k: body.get(k) for k in ("model", "messages", "n", "temperature", "top_p", "max_tokens", "seed")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class ReferenceTeacher:
    """The server's logic, independent of how it is hosted."""

    def __init__(self, world: LoadedWorld, options: ServerOptions | None = None):
        self.world = world
        self.options = options or ServerOptions()
        self.stats = ServerStats()
        self._fault_rng = random.Random(self.options.seed)
        self._by_text = {q.question: q for q in world.questions.values()}

        self.batches = BatchStore(self)

    def find_question(self, prompt: str):
        """The world question whose text occurs in the prompt (the longest, if several do)."""
        hits = [q for text, q in self._by_text.items() if text in prompt]
        return max(hits, key=lambda q: len(q.question)) if hits else None

    def _draw_fault(self) -> str | None:
        o = self.options
        if o.fault_rate and self._fault_rng.random() < o.fault_rate:
            return self._fault_rng.choice(list(o.faults))
        return None

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        n = int(body.get("n") or 1)
        temperature = 1.0 if body.get("temperature") is None else float(body["temperature"])
        prompt = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") != "assistant")
        question = self.find_question(prompt)
        key = request_key(body)
        rng = random.Random(f"{self.options.seed}:{key}")
        choices = []
        for i in range(n):
            if question is None:
                text = (
                    "The reference teacher only knows the questions of its synthetic world, "
                    "and this prompt holds none of them."
                )
            else:
                wrong = rng.random() < self.options.wrong_rate
                text, _ = write_rationale(
                    rng, question, self.world.chains[question.id], greedy=temperature == 0, wrong=wrong
                )
            choices.append(
                {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            )
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) for m in messages)
        completion_tokens = sum(count_tokens(c["message"]["content"]) for c in choices)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.options.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def report(self, window_s: float = 2.0) -> dict[str, Any]:
        return {**self.stats.snapshot(), "peak_rpm": self.stats.peak_rate_per_minute(window_s)}

    def _authorised(self, request: Request) -> bool:
        key = self.options.api_key
        return key is None or request.headers.get("authorization") == f"Bearer {key}"

    def build_app(self) -> FastAPI:
        app = FastAPI(title="kard-ray reference teacher (synthetic world)", docs_url=None, redoc_url=None)
        o = self.options

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            if not self._authorised(request):
                return api_error(401, "Incorrect API key provided.", "invalid_request_error")
            return JSONResponse({"object": "list", "data": [{"id": o.model, "object": "model",
                                                            "owned_by": "kard-ray-reference"}]})

        @app.get("/stats")
        async def get_stats(window_s: float = 2.0) -> dict[str, Any]:
            return self.report(window_s)

        @app.post("/stats/reset")
        async def reset_stats() -> dict[str, Any]:
            self.stats = ServerStats()
            return {"reset": True}

        self.batches.add_routes(app)

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            st = self.stats
            st.requests += 1
            st.arrivals.append(time.monotonic())
            st.in_flight += 1
            st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
            try:
                response = await self._handle(request, st)
            finally:
                st.in_flight -= 1
                st.last_done = time.monotonic()
            st.by_status[str(response.status_code)] += 1
            return response

        return app

    async def _handle(self, request: Request, st: ServerStats) -> Response:
        o = self.options
        if not self._authorised(request):
            return api_error(401, "Incorrect API key provided.", "invalid_request_error")
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError:
            return api_error(400, "request body is not valid JSON", "invalid_request_error")
        invalid = invalid_chat_body(body)
        if invalid:
            return api_error(400, invalid, "invalid_request_error")
        if o.latency_ms or o.jitter_ms:
            await asyncio.sleep((o.latency_ms + random.uniform(0, o.jitter_ms)) / 1000)
            if await request.is_disconnected():  # the client gave up: nothing delivered, nothing billed
                return Response(status_code=499)
        fault = self._draw_fault()
        if fault:
            st.faults[fault] += 1
        if fault == "429":
            return api_error(429, "Rate limit reached (injected).", "rate_limit_error",
                          headers={"retry-after": f"{o.retry_after_s:g}"})
        if fault == "500":
            return api_error(500, "The server had an error (injected).", "server_error")
        if fault == "timeout":
            await asyncio.sleep(o.stall_s)
            return api_error(504, "Upstream timed out (injected).", "timeout")
        result = self.complete(body)
        if fault == "malformed":
            return Response(json.dumps(result)[: 40], media_type="application/json")
        self.bill(body, result)
        return JSONResponse(result)

    def bill(self, body: dict[str, Any], result: dict[str, Any]) -> None:
        st = self.stats
        st.billed[request_key(body)] += 1
        st.prompt_tokens += result["usage"]["prompt_tokens"]
        st.completion_tokens += result["usage"]["completion_tokens"]


class ReferenceTeacherServer:
    """Hosts a ReferenceTeacher with uvicorn on a background thread (tests, the demo driver)."""

    def __init__(self, world_dir: str | Path, options: ServerOptions | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.teacher = ReferenceTeacher(load_world(world_dir), options)
        self.host, self.port = host, port
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "ReferenceTeacherServer":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.teacher.build_app(), log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1, backlog=2048)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="reference-teacher")
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("reference teacher failed to start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def stats(self) -> dict[str, Any]:
        return self.teacher.report()

    def __enter__(self) -> "ReferenceTeacherServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReferenceTeacherProcess:
    """The reference teacher in its own process (``kard teacher reference-serve``), so that a driver's
    GIL never throttles it; same ``base_url`` / ``stats()`` / ``stop()`` as the in-thread server."""

    def __init__(self, world_dir: str | Path, options: ServerOptions | None = None, host: str = "127.0.0.1"):
        self.world_dir, self.options, self.host = str(world_dir), options or ServerOptions(), host
        self.port = 0
        self._proc = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 60) -> "ReferenceTeacherProcess":
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        o = self.options
        if o.api_key:
            raise ValueError("an API key for a separate process must come from its environment; use api_key_env")
        cmd = [sys.executable, "-m", "kard_ray.cli", "teacher", "reference-serve", "--world", self.world_dir,
               "--host", self.host, "--port", str(self.port), "--latency-ms", str(o.latency_ms),
               "--jitter-ms", str(o.jitter_ms), "--fault-rate", str(o.fault_rate), "--faults", ",".join(o.faults),
               "--retry-after-s", str(o.retry_after_s), "--stall-s", str(o.stall_s),
               "--wrong-rate", str(o.wrong_rate), "--seed", str(o.seed), "--batch-delay-s", str(o.batch_delay_s),
               "--batch-fail-rate", str(o.batch_fail_rate), "--batch-expire", str(o.batch_expire),
               "--batch-max-requests", str(o.batch_max_requests), "--batch-max-bytes", str(o.batch_max_bytes)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=1):
                    return self
            except OSError:
                if self._proc.poll() is not None or time.time() > deadline:
                    if self._proc.poll() is None:
                        self._proc.kill()
                    err = self._proc.stdout.read().decode(errors="replace")[-2000:] if self._proc.stdout else ""
                    self.stop()
                    raise RuntimeError(f"reference teacher process failed to start: {err}") from None
                time.sleep(0.1)

    def stats(self, window_s: float = 2.0) -> dict[str, Any]:
        url = f"http://{self.host}:{self.port}/stats?window_s={window_s}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> "ReferenceTeacherProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
