"""The teacher's batch mode: the OpenAI Batch API (about half price), resumable by batch id.

The stage's uncached requests become JSONL lines whose ``custom_id`` is the request's cache key
(``TeacherRequest.custom_id``), split into batches by the provider's request and byte limits. Each
input file is uploaded (``files.create``), recorded in the ledger (``cache/teacher/batches/<entry>.json``:
file id, request keys, round), submitted (``batches.create``) and recorded again with its batch id,
all before polling starts. Polling backs off from ``batch_poll_s`` to ``batch_poll_max_s``; a finished
batch's output and error files are downloaded and every response goes into the same cache entries the
online path writes (``cache_outcome``), so the rationales table is built the same way.

Resume: a killed job leaves ledger entries that were never collected. The next run polls those batches
(an entry that was uploaded but not yet recorded as submitted is looked up in ``batches.list`` by its
input file) and submits only requests that are in no recorded batch: nothing is submitted twice.
Requests that failed or expired inside a batch are retried ``batch_retries`` times, in a new batch or
online (``batch_retry``); what still fails becomes a failure row and counts against the failure budget.
Malformed 200 responses and other 4xx are recorded, not retried (as online).

This runs on the driver, not in a Ray task: after the upload it only waits, one status call per
batch every few seconds to minutes, which needs no CPU and holds no cluster resource for the hours a
batch may take; a task would die with the driver's job anyway, and resuming comes from the ledger in
the run directory, which any later driver reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pydantic
from openai.types.chat import ChatCompletion

from kard_ray.artifacts import RunDir
from kard_ray.config import TeacherConfig
from kard_ray.credentials import Secret
from kard_ray.data.schema import Question
from kard_ray.teacher.cache import TeacherCache
from kard_ray.teacher.client import Outcome, describe_error, read_completion
from kard_ray.teacher.limits import LocalLimiter, RateBudget
from kard_ray.teacher.worker import (
    TeacherAborted,
    TeacherRequest,
    cache_outcome,
    call_teacher,
    failure_row,
    make_client,
    plan_requests,
    result_row,
    sampling_params,
)

ENDPOINT = "/v1/chat/completions"
LEDGER = "batches"  # beside the cache entries: the cache folder's batches/
TERMINAL = ("completed", "failed", "expired", "cancelled")
_TRANSIENT = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)


# --------------------------------------------------------------------------- requests and input files


def request_line(cfg: TeacherConfig, req: TeacherRequest) -> bytes:
    """One JSONL line; its body is what the online client would send for the same request."""
    body = {"model": cfg.model, "messages": req.messages, "n": len(req.samples), **sampling_params(cfg)}
    line = {"custom_id": req.custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, separators=(",", ":")) + "\n").encode()


def split_lines(lines: list[bytes], max_requests: int, max_bytes: int) -> list[list[int]]:
    """Indices of ``lines`` in consecutive chunks of at most ``max_requests`` lines and ``max_bytes`` bytes."""
    chunks: list[list[int]] = []
    size = 0
    for i, line in enumerate(lines):
        if len(line) > max_bytes:
            raise ValueError(f"one batch request is {len(line)} bytes, above teacher.batch_max_bytes={max_bytes}")
        if not chunks or len(chunks[-1]) >= max_requests or size + len(line) > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += len(line)
    return chunks


# --------------------------------------------------------------------------- output lines


def read_output_line(line: dict[str, Any], n: int) -> tuple[Outcome, bool]:
    """(outcome, retryable) of one output or error file line, read like an online response."""
    out = Outcome(attempts=1)
    resp, err = line.get("response"), line.get("error")
    if err:
        out.error = f"{err.get('code') or 'batch error'}: {err.get('message') or ''}".strip()
        return out, True
    status = (resp or {}).get("status_code")
    body = (resp or {}).get("body")
    if status != 200:
        message = ((body or {}).get("error") or {}).get("message", "") if isinstance(body, dict) else ""
        out.error = f"HTTP {status}{': ' + message if message else ''}"
        return out, status is None or status in (408, 409, 429) or status >= 500
    try:
        completion = ChatCompletion.model_validate(body)
    except pydantic.ValidationError as exc:
        out.error = f"unparseable response: {type(exc).__name__}"
        return out, False
    read_completion(completion, n, out)
    return out, False


# --------------------------------------------------------------------------- the ledger


class BatchLedger:  # in the teacher cache's folder (a RunDir over it)
    """One JSON file per input file / batch under ``cache/teacher/batches/``, written atomically and durably."""

    def __init__(self, run: RunDir):
        self.run = run

    def save(self, entry: dict[str, Any]) -> None:
        self.run.write_json(f"{LEDGER}/{entry['entry']}.json", entry)

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for f in self.run.list_outputs(LEDGER):
            if f["path"].endswith(".json"):
                out.append(self.run.read_json(f"{LEDGER}/{f['path']}"))
        return sorted(out, key=lambda e: e["created_at"])

    def unfinished(self, identity: str, model: str) -> list[dict[str, Any]]:
        """Entries of this endpoint and model whose results were never collected."""
        return [e for e in self.entries() if e["identity"] == identity and e["model"] == model
                and e["state"] in ("uploaded", "submitted")]


def in_recorded_batches(cache_uri: str, identity: str, model: str) -> set[str]:
    """custom_ids of requests in uncollected batches (for --dry-run: resuming them costs nothing more)."""
    return {cid for e in BatchLedger(RunDir(cache_uri)).unfinished(identity, model) for cid in e["requests"]}


# --------------------------------------------------------------------------- the session


@dataclass
class BatchStats:
    batches_created: int = 0
    batches_resumed: int = 0
    batches_by_status: Counter = field(default_factory=Counter)
    requests_batched: int = 0
    requests_retried: int = 0
    requests_retried_online: int = 0
    polls: int = 0
    api_calls: Counter = field(default_factory=Counter)
    tokens_batch: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    wait_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"batches_created": self.batches_created, "batches_resumed": self.batches_resumed,
                "batches_by_status": dict(self.batches_by_status), "requests_batched": self.requests_batched,
                "requests_retried": self.requests_retried, "requests_retried_online": self.requests_retried_online,
                "polls": self.polls, "api_calls": dict(self.api_calls), "tokens_billed_batch": self.tokens_batch,
                "wait_s": round(self.wait_s, 3)}


class BatchSession:
    """Submits, polls and collects the batches of one stage run against one endpoint."""

    def __init__(self, cfg: TeacherConfig, cache_uri: str, base_url: str | None, identity: str, api_key: Secret,
                 requests: dict[str, TeacherRequest], *, resubmit_lost: bool = False, log=print,
                 sleep: Callable[[float], None] = time.sleep):
        self.cfg, self.base_url, self.identity = cfg, base_url, identity
        self.api_key = Secret.from_env(cfg.api_key_env) or api_key
        self.requests, self.resubmit_lost, self.log, self.sleep = requests, resubmit_lost, log, sleep
        self.cache, self.ledger = TeacherCache(cache_uri), BatchLedger(RunDir(cache_uri))
        self.budget = RateBudget(cfg.requests_per_minute, cfg.tokens_per_minute, cfg.failure_budget)
        self.client = openai.OpenAI(base_url=base_url, api_key=self.api_key.reveal() or "unset",
                                    timeout=cfg.timeout_s, max_retries=0)
        self.stats = BatchStats()
        self.rows: list[dict[str, Any]] = []
        self.resolved: set[str] = set()
        self._rng = random.Random()

    # ---- provider calls
    def _call(self, name: str, fn, *args, not_found_ok: bool = False, **kwargs):
        """One API call, retried on 429 / 5xx / timeouts; other errors end the run (nothing can proceed)."""
        for attempt in range(self.cfg.max_retries + 1):
            self.stats.api_calls[name] += 1
            try:
                return fn(*args, **kwargs)
            except _TRANSIENT as err:
                last = describe_error(err)
                self.sleep(self._rng.uniform(0, min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** attempt)))
            except openai.APIStatusError as err:
                if not_found_ok and isinstance(err, openai.NotFoundError):
                    raise
                raise TeacherAborted(self._masked(f"batch API {name} failed: {describe_error(err)}")) from None
        raise TeacherAborted(self._masked(f"batch API {name} failed after {self.cfg.max_retries + 1} attempts; "
                                          f"last: {last}"))

    def _masked(self, text: str) -> str:
        key = self.api_key.reveal()
        return text.replace(key, "***") if key else text

    # ---- submitting
    def submit(self, reqs: list[TeacherRequest], round_: int) -> list[dict[str, Any]]:
        """Upload, record, create and record again, one batch per chunk of the limits."""
        lines = [request_line(self.cfg, r) for r in reqs]
        entries = []
        for chunk in split_lines(lines, self.cfg.batch_max_requests, self.cfg.batch_max_bytes):
            data = b"".join(lines[i] for i in chunk)
            ids = [reqs[i].custom_id for i in chunk]
            name = f"kard-r{round_}-{hashlib.sha256(''.join(ids).encode()).hexdigest()[:16]}"
            f = self._call("files.create", self.client.files.create, file=(f"{name}.jsonl", data), purpose="batch",
                           timeout=max(self.cfg.timeout_s, 300))
            entry = {"entry": f"{int(time.time() * 1000)}-{name}", "identity": self.identity, "model": self.cfg.model,
                     "round": round_, "state": "uploaded", "input_file_id": f.id, "batch_id": None, "status": None,
                     "created_at": time.time(), "requests": {cid: self.requests[cid].keys for cid in ids}}
            self.ledger.save(entry)
            self._create(entry)
            self.stats.requests_batched += len(ids)
            entries.append(entry)
        return entries

    def _create(self, entry: dict[str, Any]) -> None:
        batch = self._call("batches.create", self.client.batches.create, input_file_id=entry["input_file_id"],
                           endpoint=ENDPOINT, completion_window=self.cfg.batch_completion_window,
                           metadata={"kard_ledger_entry": entry["entry"][:512]})
        self.stats.batches_created += 1
        entry.update(state="submitted", batch_id=batch.id, status=batch.status)
        self.ledger.save(entry)
        self.log(f"[rationales] batch {batch.id}: {len(entry['requests'])} requests (round {entry['round']})")

    def adopt(self, entry: dict[str, Any]) -> None:
        """An entry uploaded but not recorded as submitted: find its batch by input file, else create it."""
        since = entry["created_at"] - 3600
        for batch in self._call("batches.list", self.client.batches.list, limit=100):
            if batch.input_file_id == entry["input_file_id"]:
                entry.update(state="submitted", batch_id=batch.id, status=batch.status)
                self.ledger.save(entry)
                return
            if batch.created_at < since:
                break
        self._create(entry)

    # ---- polling and collecting
    def retrieve(self, entry: dict[str, Any]):
        """The batch, or None once the provider no longer knows it (the entry is then marked lost)."""
        try:
            return self._call("batches.retrieve", self.client.batches.retrieve, entry["batch_id"], not_found_ok=True)
        except openai.NotFoundError:
            if not self.resubmit_lost:
                raise RuntimeError(
                    f"batch {entry['batch_id']} (ledger {self.cache.uri}/{LEDGER}/{entry['entry']}.json) is unknown "
                    "to the endpoint: check the API key's organisation and project; delete the ledger file to "
                    "submit its requests again (they may then be paid twice)") from None
            entry.update(state="lost")
            self.ledger.save(entry)
            self.log(f"[rationales] batch {entry['batch_id']} is unknown to the reference teacher "
                     "(restarted); its requests are submitted again")
            return None

    def download(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        content = self._call("files.content", self.client.files.content, file_id, timeout=max(self.cfg.timeout_s, 300))
        return [json.loads(x) for x in content.content.splitlines() if x.strip()]

    def collect(self, entry: dict[str, Any], batch) -> dict[str, tuple[str, bool]]:
        """Cache every response of a finished batch; returns custom_id -> (error, retryable) of the rest."""
        failed: dict[str, tuple[str, bool]] = {}
        seen = set()
        for line in self.download(batch.output_file_id) + self.download(batch.error_file_id):
            cid = line.get("custom_id")
            keys = entry["requests"].get(cid)
            if keys is None or cid in seen:
                continue
            seen.add(cid)
            out, retryable = read_output_line(line, len(keys))
            out.attempts = entry["round"] + 1
            if not out.ok:
                failed[cid] = (out.error, retryable)
                continue
            entries = cache_outcome(self.cache, keys, out, self.cfg.model, via="batch")
            self.stats.tokens_batch["prompt"] += out.prompt_tokens
            self.stats.tokens_batch["completion"] += out.completion_tokens
            req = self.requests.get(cid)
            if req is not None and cid not in self.resolved:
                self.resolved.add(cid)
                self.rows.extend(result_row(req.question, i, e, cached=False, attempts=out.attempts)
                                 for i, e in zip(req.samples, entries))
                self.budget.record(True)
        reason = f"batch {batch.status}"
        if batch.status == "failed" and batch.errors and batch.errors.data:
            reason += f": {batch.errors.data[0].message}"
        for cid in entry["requests"]:
            if cid not in seen:
                failed[cid] = (reason if batch.status != "completed" else "missing from the batch output", True)
        entry.update(state="collected", status=batch.status, output_file_id=batch.output_file_id,
                     error_file_id=batch.error_file_id,
                     failed={cid: error for cid, (error, _) in failed.items()})
        self.ledger.save(entry)
        self.stats.batches_by_status[batch.status] += 1
        return failed

    def finish(self, entry: dict[str, Any], batch) -> list[dict[str, Any]]:
        """Collect a finished batch, retry what may succeed, record the rest; returns new batches to poll."""
        retry: list[TeacherRequest] = []
        for cid, (error, retryable) in self.collect(entry, batch).items():
            req = self.requests.get(cid)
            if req is None or cid in self.resolved:
                continue  # a request of another configuration: its successes are cached, nothing more
            if retryable and entry["round"] < self.cfg.batch_retries:
                retry.append(req)
                continue
            self.resolved.add(cid)
            self.rows.append(failure_row(req.question, self.cfg.model, entry["round"] + 1, error))
            self.budget.record(False, error)
        if self.budget.aborted:
            raise TeacherAborted(self.budget.aborted)
        if not retry:
            return []
        self.stats.requests_retried += len(retry)
        self.log(f"[rationales] {len(retry)} requests failed inside batch {batch.id} ({batch.status}); "
                 f"retrying {self.cfg.batch_retry}")
        if self.cfg.batch_retry == "online":
            self.online(retry)
            return []
        return self.submit(retry, entry["round"] + 1)

    def online(self, reqs: list[TeacherRequest]) -> None:
        """Retry requests with chat completions from the driver (the same call as the online path)."""
        self.stats.requests_retried_online += len(reqs)

        async def go():
            limiter = LocalLimiter(self.budget)
            client = make_client(self.cfg, self.base_url, self.api_key, limiter)
            semaphore = asyncio.Semaphore(self.cfg.concurrency)
            try:
                return await asyncio.gather(*(call_teacher(client, limiter, self.cache, self.cfg, r, semaphore)
                                              for r in reqs))
            finally:
                await client.close()

        for req, rows in zip(reqs, asyncio.run(go())):
            self.resolved.add(req.custom_id)
            self.rows.extend(rows)

    # ---- the whole run
    def run(self) -> list[dict[str, Any]]:
        """Resume the recorded batches, submit what no batch holds, poll until every request is settled."""
        try:
            active = []
            for entry in self.ledger.unfinished(self.identity, self.cfg.model):
                if entry["state"] == "uploaded":
                    self.adopt(entry)
                self.stats.batches_resumed += 1
                active.append(entry)
            if active:
                self.log(f"[rationales] resuming {len(active)} recorded batches")
            recorded = {cid for e in active for cid in e["requests"]}
            self._poll(active, [r for cid, r in self.requests.items() if cid not in recorded])
        finally:
            self.client.close()
        return self.rows

    def _poll(self, active: list[dict[str, Any]], fresh: list[TeacherRequest]) -> None:
        """Until no batch is left: retrieve each, collect the finished ones, back off between rounds. The
        recorded batches are polled once before ``fresh`` is submitted: an endpoint that does not know
        them stops the run before it pays for anything new."""
        interval, t0 = self.cfg.batch_poll_s, time.perf_counter()
        while active or fresh:
            waiting = []
            for entry in active:
                batch = self.retrieve(entry)
                if batch is None:  # lost: submit again what it held
                    lost = [self.requests[c] for c in entry["requests"] if c in self.requests
                            and c not in self.resolved]
                    waiting += self.submit(lost, entry["round"])
                elif batch.status in TERMINAL:
                    waiting += self.finish(entry, batch)
                else:
                    if batch.status != entry["status"]:
                        entry["status"] = batch.status
                        self.ledger.save(entry)
                    waiting.append(entry)
            self.stats.polls += bool(active)
            if fresh:
                waiting += self.submit(fresh, 0)
                fresh = []
            active = waiting
            if active:
                self.sleep(interval)
                interval = min(interval * 1.5, self.cfg.batch_poll_max_s)
        self.stats.wait_s = time.perf_counter() - t0


def run_batches(cfg: TeacherConfig, cache_uri: str, questions: list[Question], base_url: str | None, identity: str,
                api_key: Secret, *, resubmit_lost: bool = False, log=print) -> tuple[list[dict[str, Any]], BatchStats]:
    """Rows for every sample of ``questions`` (cached, fetched by batch, or failed) and the session's stats."""
    cache = TeacherCache(cache_uri)
    rows, requests = plan_requests(cfg, cache, questions, identity)
    session = BatchSession(cfg, cache_uri, base_url, identity, api_key, requests, resubmit_lost=resubmit_lost,
                           log=log)
    if requests or session.ledger.unfinished(identity, cfg.model):
        rows += session.run()
    return rows, session.stats
