"""The Ray Data actor that turns questions into rationales: cache first, then the teacher, many at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa

from kard_ray.answers import parse_answer
from kard_ray.config import TeacherConfig
from kard_ray.data.schema import Question
from kard_ray.secrets import Secret
from kard_ray.teacher.cache import TeacherCache, cache_key
from kard_ray.teacher.client import TeacherClient
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


class RationaleWorker:
    """One per actor: an event loop, an async openai client and the shared limiter; a batch runs concurrently."""

    def __init__(self, run_uri: str, teacher: dict[str, Any], base_url: str | None, identity: str,
                 limiter_actor, concurrency: int, api_key: Secret):
        from kard_ray.teacher.limits import ActorLimiter

        self.cfg = TeacherConfig.model_validate(teacher)
        self.identity = identity
        self.cache = TeacherCache(run_uri)
        limited = bool(self.cfg.requests_per_minute or self.cfg.tokens_per_minute)
        self.limiter = ActorLimiter(limiter_actor, limited=limited)
        self.loop = asyncio.new_event_loop()
        self.semaphore = asyncio.Semaphore(concurrency)
        key = Secret.from_env(self.cfg.api_key_env) or api_key
        self.client = TeacherClient(base_url, self.cfg.model, key, timeout_s=self.cfg.timeout_s,
                                    max_retries=self.cfg.max_retries, limiter=self.limiter,
                                    backoff_base_s=self.cfg.backoff_base_s, backoff_max_s=self.cfg.backoff_max_s)

    def __call__(self, batch: pa.Table) -> pa.Table:
        questions = [question_from_row(r) for r in batch.to_pylist()]
        rows = self.loop.run_until_complete(self._batch(questions))
        self.loop.run_until_complete(self.limiter.flush())
        return pa.Table.from_pylist([r for rs in rows for r in rs], schema=RESULT_SCHEMA)

    async def _batch(self, questions: list[Question]) -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(self._question(q) for q in questions))

    async def _question(self, q: Question) -> list[dict[str, Any]]:
        cfg = self.cfg
        messages = build_messages(q, cfg)
        sampling = sampling_params(cfg)
        keys = [cache_key(self.identity, cfg.model, messages, sampling, i) for i in range(cfg.n)]
        hits = await asyncio.gather(*(asyncio.to_thread(self.cache.get, k) for k in keys))
        rows = [self._row(q, i, h["rationale"], h, cached=True) for i, h in enumerate(hits) if h is not None]
        missing = [i for i, h in enumerate(hits) if h is None]
        groups = [missing] if (cfg.use_n and missing) else [[i] for i in missing]
        for group in await asyncio.gather(*(self._request(q, messages, sampling, keys, g) for g in groups)):
            rows.extend(group)
        return rows

    async def _request(self, q: Question, messages, sampling, keys: list[str], samples: list[int]):
        async with self.semaphore:
            out = await self.client.complete(messages, len(samples), sampling, self.cfg.expected_completion_tokens)
        abort = await self.limiter.record(out.ok, out.error)
        if not out.ok:
            if abort:
                raise TeacherAborted(abort)
            return [{"qid": q.id, "sample": -1, "rationale": None, "parsed_answer": None, "parse_method": None,
                     "correct": None, "teacher": self.cfg.model, "prompt_tokens": 0, "completion_tokens": 0,
                     "cached": False, "attempts": out.attempts, "error": out.error}]
        rows = []
        share, rest = divmod(out.completion_tokens, len(samples))
        for j, (i, text) in enumerate(zip(samples, out.texts)):
            entry = {"rationale": text, "model": self.cfg.model, "prompt_tokens": out.prompt_tokens if j == 0 else 0,
                     "completion_tokens": share + (rest if j == 0 else 0)}
            await asyncio.to_thread(self.cache.put, keys[i], entry)
            rows.append(self._row(q, i, text, entry, cached=False, attempts=out.attempts))
        return rows

    def _row(self, q: Question, sample: int, text: str, entry: dict[str, Any], cached: bool, attempts: int = 0):
        parsed = parse_answer(text, q.options)
        return {"qid": q.id, "sample": sample, "rationale": text, "parsed_answer": parsed.index,
                "parse_method": parsed.method, "correct": parsed.index == q.answer, "teacher": entry["model"],
                "prompt_tokens": entry["prompt_tokens"], "completion_tokens": entry["completion_tokens"],
                "cached": cached, "attempts": attempts, "error": None}

    def __del__(self):
        try:
            self.loop.run_until_complete(self.client.close())
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass
