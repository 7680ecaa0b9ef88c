"""The Ray Data actor that turns questions into rationales: cache first, then the teacher, many at a time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from kard_ray.answers import parse_answer
from kard_ray.config import TeacherConfig
from kard_ray.credentials import Secret
from kard_ray.data.schema import Question
from kard_ray.teacher.cache import TeacherCache, cache_key
from kard_ray.teacher.client import Outcome, TeacherClient
from kard_ray.teacher.limits import ActorLimiter
from kard_ray.teacher.prompts import build_messages

RESULT_SCHEMA = pa.schema([
    ("qid", pa.string()), ("sample", pa.int32()), ("rationale", pa.string()), ("parsed_answer", pa.int32()),
    ("parse_method", pa.string()), ("correct", pa.bool_()), ("teacher", pa.string()),
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("cached", pa.bool_()),
    ("attempts", pa.int32()), ("error", pa.string()),
])


class TeacherAborted(RuntimeError):
    """The failure budget is spent: the run is clearly broken (endpoint, model or key)."""


def sampling_params(cfg: TeacherConfig) -> dict[str, Any]:
    return {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}


def question_from_row(row: dict[str, Any]) -> Question:
    return Question(id=row["id"], question=row["question"], options=list(row["options"]), answer=row["answer"])


@dataclass
class TeacherRequest:
    """One call to the teacher: some samples of one question (all of its missing samples with ``use_n``)."""

    question: Question
    messages: list[dict[str, str]]
    samples: list[int]
    keys: list[str]  # the cache keys of those samples

    @property
    def custom_id(self) -> str:
        """The Batch API's id of this request: its first sample's cache key (unique, content-addressed)."""
        return self.keys[0]


def sample_keys(q: Question, cfg: TeacherConfig, identity: str) -> tuple[list[dict[str, str]], list[str]]:
    """The question's prompt and the cache keys of its n samples."""
    messages = build_messages(q, cfg)
    sampling = sampling_params(cfg)
    return messages, [cache_key(identity, cfg.model, messages, sampling, i) for i in range(cfg.n)]


def plan_question(q: Question, cfg: TeacherConfig, messages, keys: list[str], hits: list[dict[str, Any] | None]
                  ) -> tuple[list[dict[str, Any]], list[TeacherRequest]]:
    """Rows for the cached samples, and the requests that would fetch the missing ones."""
    rows = [result_row(q, i, h, cached=True) for i, h in enumerate(hits) if h is not None]
    missing = [i for i, h in enumerate(hits) if h is None]
    groups = [missing] if (cfg.use_n and missing) else [[i] for i in missing]
    return rows, [TeacherRequest(q, messages, g, [keys[i] for i in g]) for g in groups]


def plan_requests(cfg: TeacherConfig, cache: TeacherCache, questions: list[Question], identity: str
                  ) -> tuple[list[dict[str, Any]], dict[str, TeacherRequest]]:
    """Rows of the cached samples, and the requests (by custom_id) for the missing ones."""
    rows, requests = [], {}
    for q in questions:
        messages, keys = sample_keys(q, cfg, identity)
        cached, reqs = plan_question(q, cfg, messages, keys, [cache.get(k) for k in keys])
        rows.extend(cached)
        requests.update((r.custom_id, r) for r in reqs)
    return rows, requests


def cache_outcome(cache: TeacherCache, keys: list[str], out: Outcome, model: str,
                  via: str = "online") -> list[dict[str, Any]]:
    """Cache each sample of a successful response under its key (the first carries the prompt tokens)."""
    entries = []
    share, rest = divmod(out.completion_tokens, len(keys))
    for j, (key, text) in enumerate(zip(keys, out.texts)):
        entry = {"rationale": text, "model": model, "prompt_tokens": out.prompt_tokens if j == 0 else 0,
                 "completion_tokens": share + (rest if j == 0 else 0), "via": via}
        cache.put(key, entry)
        entries.append(entry)
    return entries


def store_outcome(cache: TeacherCache, req: TeacherRequest, out: Outcome, model: str,
                  via: str = "online") -> list[dict[str, Any]]:
    """Cache a successful response and return its rows."""
    entries = cache_outcome(cache, req.keys, out, model, via)
    return [result_row(req.question, i, e, cached=False, attempts=out.attempts) for i, e in zip(req.samples, entries)]


def failure_row(q: Question, model: str, attempts: int, error: str) -> dict[str, Any]:
    return {"qid": q.id, "sample": -1, "rationale": None, "parsed_answer": None, "parse_method": None,
            "correct": None, "teacher": model, "prompt_tokens": 0, "completion_tokens": 0,
            "cached": False, "attempts": attempts, "error": error}


def result_row(q: Question, sample: int, entry: dict[str, Any], cached: bool, attempts: int = 0) -> dict[str, Any]:
    text = entry["rationale"]
    parsed = parse_answer(text, q.options)
    return {"qid": q.id, "sample": sample, "rationale": text, "parsed_answer": parsed.index,
            "parse_method": parsed.method, "correct": parsed.index == q.answer, "teacher": entry["model"],
            "prompt_tokens": entry["prompt_tokens"], "completion_tokens": entry["completion_tokens"],
            "cached": cached, "attempts": attempts, "error": None}


async def call_teacher(client: TeacherClient, limiter, cache: TeacherCache, cfg: TeacherConfig,
                       req: TeacherRequest, semaphore: asyncio.Semaphore) -> list[dict[str, Any]]:
    """One online request: its rows once cached, or one failure row; raises once the failure budget is spent."""
    async with semaphore:
        out = await client.complete(req.messages, len(req.samples), sampling_params(cfg),
                                    cfg.expected_completion_tokens)
    abort = await limiter.record(out.ok, out.error)
    if not out.ok:
        if abort:
            raise TeacherAborted(abort)
        return [failure_row(req.question, cfg.model, out.attempts, out.error)]
    return await asyncio.to_thread(store_outcome, cache, req, out, cfg.model)


def make_client(cfg: TeacherConfig, base_url: str | None, api_key: Secret, limiter) -> TeacherClient:
    key = Secret.from_env(cfg.api_key_env) or api_key
    return TeacherClient(base_url, cfg.model, key, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                         limiter=limiter, backoff_base_s=cfg.backoff_base_s, backoff_max_s=cfg.backoff_max_s)


class RationaleWorker:
    """One per actor: an event loop, an async openai client and the shared limiter; a batch runs concurrently."""

    def __init__(self, cache_uri: str, teacher: dict[str, Any], base_url: str | None, identity: str,
                 limiter_actor, concurrency: int, api_key: Secret):
        self.cfg = TeacherConfig.model_validate(teacher)
        self.identity = identity
        self.cache = TeacherCache(cache_uri)
        limited = bool(self.cfg.requests_per_minute or self.cfg.tokens_per_minute)
        self.limiter = ActorLimiter(limiter_actor, limited=limited)
        self.loop = asyncio.new_event_loop()
        self.semaphore = asyncio.Semaphore(concurrency)
        self.client = make_client(self.cfg, base_url, api_key, self.limiter)

    def __call__(self, batch: pa.Table) -> pa.Table:
        questions = [question_from_row(r) for r in batch.to_pylist()]
        rows = self.loop.run_until_complete(self._batch(questions))
        self.loop.run_until_complete(self.limiter.flush())
        return pa.Table.from_pylist([r for rs in rows for r in rs], schema=RESULT_SCHEMA)

    async def _batch(self, questions: list[Question]) -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(self._question(q) for q in questions))

    async def _question(self, q: Question) -> list[dict[str, Any]]:
        messages, keys = sample_keys(q, self.cfg, self.identity)
        hits = await asyncio.gather(*(asyncio.to_thread(self.cache.get, k) for k in keys))
        rows, requests = plan_question(q, self.cfg, messages, keys, hits)
        for group in await asyncio.gather(*(call_teacher(self.client, self.limiter, self.cache, self.cfg, r,
                                                         self.semaphore) for r in requests)):
            rows.extend(group)
        return rows

    def __del__(self):
        try:
            self.loop.run_until_complete(self.client.close())
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass
