"""The KARD answer service on Ray Serve: retrieve -> rerank -> generate, behind a typed HTTP API.

Deployments: ``Retriever`` (the run's BM25 index and passages, memory-mapped), ``RerankerModel``
and ``Generator`` (both batched by ``DrainBatcher``: concurrent requests share forward passes), composed by
the FastAPI ingress ``KardService`` through ``DeploymentHandle``s. Build with
``build_app(ServeAppArgs(...))`` or from ``serve/config.yaml`` (``import_path: serve.app:build_app``).

Everything that shapes an answer (query format, first stage and kappa*, hops, reranker and student
lengths, passages, decoding) comes from the run's resolved config as ``InferenceSettings``, the same
object the evaluation stage used; ``ServeAppArgs`` holds serving knobs and explicit overrides only.
"""

# No `from __future__ import annotations`: FastAPI must see the request models as classes.
import asyncio
import logging
import os
import secrets
import time
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError
from ray.serve import Application
from ray.serve.exceptions import BackPressureError

from kard_ray.answers import answer_segment, split_options
from kard_ray.artifacts import RunDir
from kard_ray.config import InferenceSettings, RetrievalConfig
from kard_ray.inference import question_query
from kard_ray.registry import output, student_stage
from kard_ray.reranker.hops import hop_plan
from kard_ray.run_readers import open_passages, open_reranker, open_retriever, run_config
from kard_ray.runtime import lower_cpu_priority
from kard_ray.student.formats import answer_line_done
from kard_ray.student.generate import StudentPredictor
from serve.admission import Admission
from serve.chat import ChatRequest, completion, stream_events, unsupported, usage_of

log = logging.getLogger("ray.serve")
api = FastAPI(title="kard-ray answer service",
              description="Knowledge-augmented answers from a distilled student: retrieve, rerank, generate.")


# --------------------------------------------------------------------------- API types


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="The question; its length limit is the service's max_question_chars.")
    options: list[str] | None = Field(None, min_length=2, max_length=26, description="Answer options, if any.")
    top_k: int | None = Field(None, ge=1, le=20, description="Passages given to the student.")
    candidates: int | None = Field(None, ge=1, le=1000, description="First-stage candidates to rerank.")
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="At most the run's own limit.")
    return_passages: bool = True

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is empty")
        return v.strip()

    @field_validator("options")
    @classmethod
    def _options(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not o.strip() or len(o) > 1000 for o in v):
            raise ValueError("every option must be a non-empty string of at most 1000 characters")
        return v


class Passage(BaseModel):
    pid: str
    text: str
    bm25_score: float
    rerank_score: float | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AnswerResponse(BaseModel):
    answer: str | None
    answer_index: int | None
    parsed_by: str
    rationale: str
    finish_reason: Literal["stop", "length"] = Field(description="stop: the answer line is complete.")
    passages: list[Passage]
    timings_ms: dict[str, float]
    usage: Usage = Field(description="Student tokens: the prompt (question, options, passages) and the answer.")


# --------------------------------------------------------------------------- deployments


def _load_or_log(what: str, fn):
    """Run a model load; a failure is logged in one clear line before the replica dies."""
    try:
        return fn()
    except Exception as exc:
        log.error("kard-serve: %s failed to load: %s: %s", what, type(exc).__name__, exc)
        raise


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Retriever:
    def __init__(self, run_dir: str, retrieval: dict[str, Any], first_stage: str):
        run, cfg = RunDir(run_dir), RetrievalConfig.model_validate(retrieval)
        self.first = _load_or_log(f"retriever ({first_stage}) of {run_dir}",
                                  lambda: open_retriever(run.uri, cfg, first_stage))
        self.bm25 = self.first if first_stage == "bm25" else open_retriever(run.uri, cfg, "bm25")
        self.store = open_passages(run.uri)

    def search(self, query: str, k: int) -> list[dict[str, Any]]:
        rows, _ = self.first.search(query, k)
        rows = rows.tolist()
        bm25 = self.bm25.score_rows(query, rows) if rows else []
        return [{"row": r, "pid": p, "text": t, "bm25_score": float(s)}
                for r, p, t, s in zip(rows, self.store.pids(rows), self.store.texts(rows), bm25)]


def _use_threads(threads: int) -> None:
    """Torch threads of a model replica: ``threads``, or with 0 the CPUs Ray reserved for it."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    else:
        from kard_ray.runtime import use_assigned_cores

        use_assigned_cores()


def _batcher(fn, max_batch_size: int, batch_wait_ms: float, nice: int):
    """A ``DrainBatcher`` for a model deployment that computes at niceness ``nice`` (``lower_cpu_priority``) and
    reports its batch sizes and times to Prometheus (Serve tags them with the deployment)."""
    from ray.serve import metrics

    from serve.batcher import DrainBatcher

    sizes = metrics.Histogram("kard_batch_size", description="Requests per model batch.",
                              boundaries=[1, 2, 4, 8, 16, 32, 64])
    seconds = metrics.Histogram("kard_batch_ms", description="Time of one model batch.",
                                boundaries=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000])

    def observe(n: int, s: float) -> None:
        sizes.observe(n)
        seconds.observe(1000 * s)

    def run(items: list) -> list:
        lower_cpu_priority(nice)  # this thread and any pool the model started since the last batch
        return fn(items)

    return DrainBatcher(run, max_batch_size, batch_wait_ms, on_batch=observe)


@serve.deployment(ray_actor_options={"num_cpus": 1})
class RerankerModel:
    """The run's reranker (with its stored passage vectors when it is a bi-encoder); concurrent requests share
    forward passes (``DrainBatcher``)."""

    def __init__(self, run_dir: str, settings: dict[str, Any], max_batch_size: int = 16, batch_wait_ms: float = 0,
                 use_vectors: bool = True, threads: int = 0, nice: int = 0):
        lower_cpu_priority(nice)  # loading too: a replica starting under load must not starve the request path
        s = InferenceSettings.model_validate(settings)
        self.model = _load_or_log(f"reranker of {run_dir}", lambda: open_reranker(run_dir, s, use_vectors))
        _use_threads(threads)
        self.batcher = _batcher(self._run, max_batch_size, batch_wait_ms, nice)

    def _run(self, requests: list[tuple[str, list[int], list[str]]]) -> list[list[float]]:
        return [s.tolist() for s in self.model.score_candidates_many(requests)]

    async def score(self, request: tuple[str, list[int], list[str]]) -> list[float]:
        return await self.batcher.submit(request)


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Generator:
    """The evaluation's ``StudentPredictor``, batched (``DrainBatcher``): the same prompts, lengths and decoding."""

    def __init__(self, model_dir: str, method: str, settings: dict[str, Any], max_batch_size: int = 16,
                 batch_wait_ms: float = 0, threads: int = 0, nice: int = 0):
        lower_cpu_priority(nice)
        self.predictor = _load_or_log(f"student {model_dir}", lambda: StudentPredictor(model_dir, method, settings))
        _use_threads(threads)
        self.batcher = _batcher(self._run, max_batch_size, batch_wait_ms, nice)

    def _run(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for it, p in zip(items, self.predictor.predict(items)):
            text, index = p["generation"], p["prediction"]
            if it["options"] and index >= 0:
                answer, parsed_by = it["options"][index], p["parsed_by"]
            else:
                answer, index = answer_segment(text).strip() or None, None
                parsed_by = "free_text" if not it["options"] else p["parsed_by"]
            limit = min(it.get("max_new_tokens") or self.predictor.settings.max_new_tokens,
                        self.predictor.settings.max_new_tokens)
            finish = "length" if p["completion_tokens"] >= limit and not answer_line_done(text) else "stop"
            out.append({"text": text, "answer": answer, "answer_index": index, "parsed_by": parsed_by,
                        "finish_reason": finish, "prompt_tokens": p["prompt_tokens"],
                        "completion_tokens": p["completion_tokens"]})
        return out

    async def generate(self, item: dict[str, Any]) -> dict[str, Any]:
        return await self.batcher.submit(item)


# --------------------------------------------------------------------------- ingress

HEAD_NODE = "node:__internal_head__"  # a resource only the head node has
# a model replica gone mid-request (its node lost, its process killed): "may or may not have been executed"
REPLICA_LOST = (RayActorError, WorkerCrashedError, ObjectLostError)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, max_queued_requests=256)
@serve.ingress(api)
class KardService:
    def __init__(self, retriever, reranker, generator, *, settings: dict[str, Any], overrides: dict[str, Any],
                 max_question_chars: int = 4000, request_timeout_s: float = 30.0, api_key_env: str | None = None,
                 model_name: str = "kard-student", admission_control: bool = True):
        self.retriever, self.reranker, self.generator = retriever, reranker, generator
        self.settings, self.overrides = InferenceSettings.model_validate(settings), overrides
        self.max_chars, self.timeout = max_question_chars, request_timeout_s
        self.admission = Admission(request_timeout_s) if admission_control else None
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not self.api_key:
            raise RuntimeError(f"serve.api_key_env={api_key_env!r} is set but that environment variable is empty")
        self.model_name = model_name
        self._metrics()

    def _metrics(self) -> None:
        """Prometheus metrics beside Serve's own per-deployment ones, on each node's metrics export port."""
        from ray.serve import metrics

        ms = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
        self.requests = metrics.Counter("kard_requests", description="Answer requests by route and HTTP status.",
                                        tag_keys=("route", "status"))
        self.latency = metrics.Histogram("kard_request_latency_ms", description="End-to-end answer latency.",
                                         boundaries=ms, tag_keys=("route",))
        self.step_latency = metrics.Histogram("kard_step_latency_ms", description="Retrieve, rerank, generate.",
                                              boundaries=ms, tag_keys=("step",))

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(token.encode(), self.api_key.encode()):
            raise HTTPException(401, "missing or wrong bearer API key", headers={"WWW-Authenticate": "Bearer"})

    async def _answer(self, req: AnswerRequest) -> dict[str, Any]:
        if len(req.question) > self.max_chars:
            raise HTTPException(413, f"question has {len(req.question)} characters; the limit is {self.max_chars}")

        options, s = req.options or [], self.settings
        top_k = req.top_k or s.passages
        n_cand = max(req.candidates or s.first_stage_k, top_k)
        query = question_query(s, req.question, options)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        if self.reranker is None:
            cands = (await self.retriever.search.remote(query, n_cand))[:top_k]
            scores: list[float | None] = [None] * len(cands)
            timings.update(retrieve=1000 * (time.perf_counter() - t), rerank=0.0)
        else:
            chosen = await self._retrieve_and_rerank(query, top_k, n_cand, timings)
            cands, scores = [c for c, _ in chosen], [s for _, s in chosen]
        t = time.perf_counter()
        out = await self.generator.generate.remote({"question": req.question, "options": options,
                                                    "passages": [c["text"] for c in cands],
                                                    "max_new_tokens": req.max_new_tokens})
        timings["generate"] = 1000 * (time.perf_counter() - t)
        for step, ms in timings.items():
            self.step_latency.observe(ms, tags={"step": step})
        passages = [{"pid": c["pid"], "text": c["text"], "bm25_score": c["bm25_score"], "rerank_score": s}
                    for c, s in zip(cands, scores)] if req.return_passages else []
        return {"answer": out["answer"], "answer_index": out["answer_index"], "parsed_by": out["parsed_by"],
                "rationale": out["text"], "finish_reason": out["finish_reason"], "passages": passages,
                "timings_ms": {k: round(v, 2) for k, v in timings.items()}, "usage": usage_of(out)}

    async def _retrieve_and_rerank(self, query: str, top_k: int, n_cand: int,
                                   timings: dict[str, float]) -> list[tuple[dict, float]]:
        """``hop_plan`` (the evaluation's multi-hop rerank) driven by the Retriever and RerankerModel
        deployments; time spent in each is summed into ``timings``."""
        plan = hop_plan(query, top_k, n_cand, self.settings.hops, key=lambda c: c["row"], text=lambda c: c["text"])
        timings.update(retrieve=0.0, rerank=0.0)
        try:
            kind, q, arg = next(plan)
            while True:
                t = time.perf_counter()
                if kind == "search":
                    result = await self.retriever.search.remote(q, arg)
                else:
                    result = await self.reranker.score.remote((q, [c["row"] for c in arg], [c["text"] for c in arg]))
                timings["retrieve" if kind == "search" else "rerank"] += 1000 * (time.perf_counter() - t)
                kind, q, arg = plan.send(result)
        except StopIteration as stop:
            return stop.value

    async def _answer_on_live_replicas(self, req: AnswerRequest) -> dict[str, Any]:
        """``_answer``, once more when a model replica was lost under it: answering is free of side effects, and
        Serve's router sends the retry to the replicas still alive."""
        try:
            return await self._answer(req)
        except REPLICA_LOST as exc:
            log.warning("a model replica was lost mid-request (%s); answering again", type(exc).__name__)
            return await self._answer(req)

    async def _with_timeout(self, req: AnswerRequest, route: str) -> dict[str, Any]:
        """The answer within the request timeout, or a 503 at once when it could not come in time (admission
        control); every outcome is counted and timed per route."""
        t, status, answered = time.perf_counter(), "200", False
        decision = self.admission.admit() if self.admission else None
        try:
            if decision is not None and not decision.admitted:
                status = "503"
                raise HTTPException(503, f"overloaded: an answer now would come after the {self.timeout:.0f}s limit; "
                                         f"retry after {decision.retry_after_s:.0f}s",
                                    headers={"Retry-After": str(int(decision.retry_after_s))})
            out = await asyncio.wait_for(self._answer_on_live_replicas(req), self.timeout)
            answered = True
            return out
        except HTTPException as exc:
            status = str(exc.status_code)
            raise
        except asyncio.CancelledError:  # the client went away: Serve cancels the downstream calls too
            status = "499"
            raise
        except asyncio.TimeoutError:
            status = "503"
            raise HTTPException(503, f"no answer within {self.timeout:.0f}s; the service is busy, try again",
                                headers={"Retry-After": "2"}) from None
        except REPLICA_LOST:  # lost twice: the replicas left are being replaced
            status = "503"
            raise HTTPException(503, "a model replica was lost while answering; try again",
                                headers={"Retry-After": "2"}) from None
        except BackPressureError as exc:  # a model deployment's queue is full
            status = "503"
            raise HTTPException(503, f"overloaded, try again shortly ({exc})", headers={"Retry-After": "1"}) from None
        finally:
            seconds = time.perf_counter() - t
            if decision is not None and decision.admitted:
                self.admission.finished(decision, seconds, answered)
            self.requests.inc(tags={"route": route, "status": status})
            self.latency.observe(1000 * seconds, tags={"route": route})

    @api.get("/healthz")
    def healthz(self) -> dict:
        """Liveness, and the settings every answer is made with (with any override of the run's)."""
        return {"ok": True, "model": self.model_name, "reranker": self.reranker is not None,
                "settings": self.settings.model_dump(), "overrides": self.overrides}

    @api.post("/v1/answer", response_model=AnswerResponse)
    async def answer(self, req: AnswerRequest, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return await self._with_timeout(req, "answer")

    @api.get("/v1/models")
    def models(self, request: Request) -> dict:
        self._authorize(request)
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "kard-ray"}]}

    @api.post("/v1/chat/completions")
    async def chat(self, req: ChatRequest, request: Request):
        """OpenAI-compatible facade: the last user message is the question (options may follow as lines
        starting with '(A)', '(B)', ...); retrieval and reranking happen behind it. ``stream: true`` answers
        as server-sent events; ``usage`` counts the student's tokens."""
        self._authorize(request)
        if req.model and req.model != self.model_name:
            raise HTTPException(404, f"model {req.model!r} is not served here; this service is {self.model_name!r}")
        users = [m.text for m in req.messages if m.role == "user"]
        if not users:
            raise HTTPException(422, "no user message")
        if reason := unsupported(req, self.settings.decoding):
            raise HTTPException(422, reason)

        question, options = split_options(users[-1])
        try:
            parsed = AnswerRequest(question=question, options=options or None, return_passages=False,
                                   max_new_tokens=req.token_limit)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        out = await self._with_timeout(parsed, "chat")
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(stream_events(self.model_name, out["rationale"], out["usage"],
                                                   out["finish_reason"], include_usage),
                                     media_type="text/event-stream")
        return completion(self.model_name, out["rationale"], out["usage"], out["finish_reason"])


# --------------------------------------------------------------------------- app builder


class Autoscaling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)
    upscale_delay_s: float = Field(3, ge=0)
    downscale_delay_s: float = Field(10, ge=0)


class ServeAppArgs(BaseModel):
    """Serving knobs for ``build_app`` (the same fields as ``serve/config.yaml``'s ``args``). How answers are
    made comes from the run; ``overrides`` replaces named ``InferenceSettings`` fields (reported by /healthz)."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str
    student: Literal["kard", "rd", "ft"] = "kard"
    use_reranker: bool = True
    use_passage_vectors: bool = Field(True, description="Bi-encoders: rerank with the stored passage vectors "
                                                        "(same scores to rounding); false encodes every candidate.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="e.g. {hops: 1, max_new_tokens: 96}")
    max_batch_size: int = Field(16, ge=1, description="1 turns dynamic batching off.")
    batch_wait_ms: float = Field(0, ge=0, description="Beyond taking what queued while the model was busy, wait "
                                                      "this long for more requests (0 on CPUs; some ms on GPUs).")
    max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int = Field(64, ge=-1, description="Beyond this, requests get 503 + Retry-After.")
    request_timeout_s: float = Field(30, gt=0)
    admission_control: bool = Field(True, description="Refuse at once (503 + Retry-After) a request that the "
                                                      "measured answer rate says cannot be answered in time, "
                                                      "instead of letting it wait out request_timeout_s.")
    ingress_max_ongoing_requests: int = Field(
        1024, ge=1, description="With admission control: requests the ingress takes at once to answer or refuse "
                                "(a refusal costs it microseconds; the measured answer rate bounds admitted ones).")
    ingress_on_head: bool = Field(True, description="Run the ingress (light: routing, admission, retries) on the "
                                                    "head node beside Serve's proxy, so losing a worker node never "
                                                    "takes the requests in flight with it (Ray's proxy answers "
                                                    "500 for those); false: on any node, 0.25 CPU.")
    max_question_chars: int = Field(4000, ge=1)
    api_key_env: str | None = None
    reranker_autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    generator_autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    generator_num_gpus: float = Field(0, ge=0, description="GPUs per generator replica (fractions allowed).")
    reranker_num_gpus: float | None = Field(None, ge=0, description="GPUs per reranker replica; None: the run's "
                                                                   "reranker.num_gpus.")
    model_cpus: float = Field(1, gt=0)
    model_threads: int = Field(0, ge=0, description="Torch threads of each reranker and generator replica; 0: "
                                                    "the CPUs it reserves (model_cpus).")
    model_nice: int = Field(0, ge=0, le=19, description="CPU niceness of the reranker and generator replicas "
                                                        "(Ray starts every worker at 15; 19: their compute yields "
                                                        "a shared node's cores to Serve's proxy and the ingress). "
                                                        "0 leaves Ray's; see docs/reliability.md for what 19 buys.")


def model_actor_options(args: ServeAppArgs, cfg) -> dict[str, dict[str, float]]:
    """Each model deployment's replica resources: ``model_cpus``, and its GPUs (the reranker's default is the
    run's ``reranker.num_gpus``, what its evaluation used)."""
    reranker_gpus = cfg.reranker.num_gpus if args.reranker_num_gpus is None else args.reranker_num_gpus
    return {"reranker": {"num_cpus": args.model_cpus, "num_gpus": reranker_gpus},
            "generator": {"num_cpus": args.model_cpus, "num_gpus": args.generator_num_gpus}}


def build_app(args: ServeAppArgs | dict) -> Application:
    """The retrieve -> rerank -> generate graph for a finished run directory, with the run's settings: what
    ``serve deploy``/``serve run`` call with the config's ``args`` (Serve wants a builder of exactly one parameter).
    Replicas read ``api_key_env`` from their node's environment (a Kubernetes Secret, the cluster's env)."""
    return build_graph(args)


def build_graph(args: ServeAppArgs | dict, ingress_runtime_env: dict | None = None) -> Application:
    """``build_app``, and ``ingress_runtime_env`` to hand the ingress variables its node does not have."""
    args = args if isinstance(args, ServeAppArgs) else ServeAppArgs.model_validate(args)
    run = RunDir(args.run_dir)
    student = student_stage(args.student)
    if not run.is_done(student):
        raise ValueError(f"{run.uri} has no finished {student}; train it first (kard {student})")
    cfg = run_config(run)
    settings = InferenceSettings.of(cfg).with_overrides(args.overrides)
    queue = {"max_ongoing_requests": args.max_ongoing_requests, "max_queued_requests": args.max_queued_requests}
    retriever = Retriever.options(**queue).bind(run.uri, cfg.retrieval.model_dump(), settings.first_stage)
    reranker = None
    actor_options = model_actor_options(args, cfg)
    if args.use_reranker and run.is_done("reranker"):
        reranker = RerankerModel.options(
            autoscaling_config=args.reranker_autoscaling.model_dump(), ray_actor_options=actor_options["reranker"],
            **queue).bind(run.uri, settings.model_dump(), args.max_batch_size, args.batch_wait_ms,
                          args.use_passage_vectors, args.model_threads, args.model_nice)
    generator = Generator.options(
        autoscaling_config=args.generator_autoscaling.model_dump(),
        ray_actor_options=actor_options["generator"], **queue,
    ).bind(run.uri_of(output(student, "model")), args.student, settings.model_dump(), args.max_batch_size,
           args.batch_wait_ms, args.model_threads, args.model_nice)
    # with admission control every request reaches the ingress's handler at once, which answers or refuses it
    # there: queued in front of it, a request would wait for a slot before anyone decides on it
    ingress_queue = {"max_ongoing_requests": args.ingress_max_ongoing_requests} if args.admission_control else {}
    placement = {"num_cpus": 0, "resources": {HEAD_NODE: 0.001}} if args.ingress_on_head else {"num_cpus": 0.25}
    ingress = KardService.options(ray_actor_options={**placement, "runtime_env": ingress_runtime_env or {}},
                                  **ingress_queue)
    return ingress.bind(retriever, reranker, generator, settings=settings.model_dump(), overrides=args.overrides,
                        max_question_chars=args.max_question_chars, request_timeout_s=args.request_timeout_s,
                        api_key_env=args.api_key_env, model_name=f"kard-student-{args.student}",
                        admission_control=args.admission_control)
