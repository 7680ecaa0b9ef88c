"""The cross-encoder: (question + options, passage) -> one relevance logit; loading, scoring, saving."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from kard_ray.data.schema import render_options
from kard_ray.devices import inference_dtype, process_device
from kard_ray.efficiency import count_tokens
from kard_ray.fs import resolve_fs
from kard_ray.models import resolve_model, safe_load_kwargs
from kard_ray.reranker.hops import multi_hop_rerank
from kard_ray.retrieval.dense import embed, embed_batch


def query_text(question: str, options: Sequence[str], with_options: bool = True) -> str:
    """What the reranker (and question-side retrieval) sees of a question."""
    if not with_options:
        return question
    return question + " " + render_options(options)


ARCH_FILE = "kard_reranker.json"  # architecture, scale and hops, saved beside the HF files
ARCH_DEFAULTS = {"architecture": "cross", "bi_scale": 1.0, "hops": 1}  # folders without the file, or older ones


def load_reranker(name: str, architecture: str = "cross", trust_remote_code: bool = False, lora: bool = False,
                  dtype=None):
    """(tokenizer, model): a single-logit cross-encoder (fresh head when the checkpoint has none) or,
    for ``bi``, the plain encoder whose mean-pooled embeddings are compared by cosine. ``dtype``: the weights'
    (default fp32: the master copy for training, whatever the checkpoint holds)."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(name)
    dtype = dtype or torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if architecture == "bi":
        model = AutoModel.from_pretrained(path, dtype=dtype, **safe_load_kwargs(trust_remote_code))
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # mean pooling does not use it; unused parameters break DDP's gradient sync
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype,
                                                                   **safe_load_kwargs(trust_remote_code))
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ImportError("reranker.lora needs the peft package (pip install peft)") from exc
        task = "FEATURE_EXTRACTION" if architecture == "bi" else "SEQ_CLS"
        model = get_peft_model(model, LoraConfig(task_type=task, r=16, lora_alpha=32, lora_dropout=0.05))
    return tokenizer, model


def encode_pairs(tokenizer, queries: Sequence[str], passages: Sequence[str], max_length: int):
    return tokenizer(list(queries), list(passages), padding=True, truncation="longest_first",
                     max_length=max_length, return_tensors="pt")


def score_pairs(model, tokenizer, queries: Sequence[str], q_index: Sequence[int], passages: Sequence[str], *,
                architecture: str, max_length: int, scale: float, device, stats: dict | None = None):
    """Scores of shape (len(passages),): passages[j] against queries[q_index[j]]. The one scoring path of
    both architectures: the cross-encoder reads each (query, passage) pair in one forward call; the
    bi-encoder embeds each query once, and queries and passages as two batches, each padded to its own
    longest text (in one batch every short passage was padded to the longest hop-expanded query: two
    thirds of the demo reranker's training compute), and a passage that recurs in the batch (two queries'
    candidates, the empty texts that pad short lists) is embedded once: the same scores, and the same
    gradients, since backward sums a shared embedding's uses. DDP takes two forward calls before one
    backward: a parameter's gradient hook fires once, after both uses are summed."""
    import torch

    if architecture == "cross":
        enc = encode_pairs(tokenizer, [queries[i] for i in q_index], passages, max_length).to(device)
        count_tokens(stats, enc)
        return model(**enc).logits.float().view(-1)
    slot = {t: i for i, t in enumerate(dict.fromkeys(passages))}
    q_emb, p_emb = (embed_batch(model, tokenizer, texts, max_length, device, stats) for texts in (queries, list(slot)))
    q = q_emb[torch.as_tensor(list(q_index), dtype=torch.long, device=q_emb.device)]
    p = p_emb[torch.as_tensor([slot[t] for t in passages], dtype=torch.long, device=p_emb.device)]
    return scale * (q * p).sum(-1)


def score_matrix(model, tokenizer, queries: Sequence[str], passages: Sequence[str], n: int, *, architecture: str,
                 max_length: int, scale: float, device, stats: dict | None = None):
    """Scores of shape (len(queries), n): passages[i*n:(i+1)*n] belong to queries[i] (``score_pairs``)."""
    b = len(queries)
    return score_pairs(model, tokenizer, queries, [i for i in range(b) for _ in range(n)], passages,
                       architecture=architecture, max_length=max_length, scale=scale, device=device,
                       stats=stats).view(b, n)


def read_architecture(model_dir: str) -> dict:
    """The saved architecture, scale and hops of a reranker folder (local path or URI), with
    ARCH_DEFAULTS for what it lacks: folders saved before the file or a field existed."""
    import pyarrow.fs as pafs


    fs, root = resolve_fs(model_dir)
    path = f"{root.rstrip('/')}/{ARCH_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return dict(ARCH_DEFAULTS)
    with fs.open_input_stream(path) as f:
        return {**ARCH_DEFAULTS, **json.loads(f.read())}


def save_architecture(path: str, architecture: str, scale: float, hops: int = 1) -> None:
    with open(os.path.join(path, ARCH_FILE), "w") as f:
        json.dump({"architecture": architecture, "bi_scale": scale, "hops": hops}, f)


class Reranker:
    """Inference: score passages for a query with a trained reranker folder (plain HF format)."""

    def __init__(self, path: str, max_length: int = 256, batch_size: int = 64, device: str | None = None,
                 vectors: np.ndarray | None = None):
        """``vectors``: the KB's passages embedded by this (bi-encoder) model, row-aligned with the passage
        store (``reranker.vectors``); with them a candidate costs a dot product, not an encoding."""
        import torch


        spec = read_architecture(path)
        self.architecture, self.scale, self.hops = spec["architecture"], spec["bi_scale"], int(spec["hops"])
        self.device = torch.device(device) if device else process_device()
        # a cross-encoder scores in half precision on GPU; a bi-encoder's queries stay fp32, like the stored
        # passage vectors they are compared with (``retrieval.dense.Encoder``)
        dtype = inference_dtype(self.device) if self.architecture == "cross" else torch.float32
        self.tokenizer, self.model = load_reranker(path, self.architecture, dtype=dtype)
        self.model.to(self.device).eval()
        self.max_length, self.batch_size = max_length, batch_size
        self.vectors = vectors if self.architecture == "bi" else None

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Bi-encoder query vectors (unit length), the same embedding as the stored passage vectors."""
        return embed(self.model, self.tokenizer, queries, self.max_length, self.device, self.batch_size)

    def score_candidates_many(self, requests: Sequence[tuple[str, Sequence[int], Sequence[str]]]) -> list[np.ndarray]:
        """Scores for (query, passage rows, passage texts) requests: stored vectors when this model has them
        (one query encoding each), else the texts through the model (cross-encoders, models without vectors)."""
        if self.vectors is None:
            return self.score_many([(q, texts) for q, _, texts in requests])
        queries = list(dict.fromkeys(q for q, _, _ in requests))
        q_emb = dict(zip(queries, self.embed_queries(queries)))
        return [(self.scale * (np.asarray(self.vectors[np.asarray(rows, np.int64)], np.float32) @ q_emb[q]))
                .astype(np.float32) for q, rows, _ in requests]

    def score_candidates(self, query: str, rows: Sequence[int], texts: Sequence[str]) -> np.ndarray:
        return self.score_candidates_many([(query, rows, texts)])[0]

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_many([(query, passages)])[0]

    def score_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """Scores for several (query, passages) requests in shared forward passes (Serve batching)."""
        import torch

        pairs = [(q, p) for q, texts in requests for p in texts]
        flat: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start:start + self.batch_size]
                slot = {q: j for j, q in enumerate(dict.fromkeys(q for q, _ in chunk))}  # each query once
                s = score_pairs(self.model, self.tokenizer, list(slot), [slot[q] for q, _ in chunk],
                                [p for _, p in chunk], architecture=self.architecture, max_length=self.max_length,
                                scale=self.scale, device=self.device)
                flat.append(s.float().cpu().numpy())
        scores = np.concatenate(flat) if flat else np.zeros(0, np.float32)
        out, offset = [], 0
        for _, texts in requests:
            out.append(scores[offset:offset + len(texts)])
            offset += len(texts)
        return out

    def retrieve(self, query: str, first_stage, texts, k: int, kappa: int,
                 candidates: np.ndarray | None = None, hops: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best passage rows for ``query`` over ``kappa`` first-stage candidates per hop, in ``hops``
        rounds (default: as many as the model was trained for) (``first_stage.search``, ``texts(rows)``);
        ``candidates``: the first hop's, when the caller already searched."""
        return multi_hop_rerank(query, search=lambda q, n: first_stage.search(q, n)[0],
                                score=self.score_candidates, texts=texts, k=k, kappa=kappa, hops=hops or self.hops,
                                first_rows=candidates)
