"""Dense retrieval: a sentence encoder (mean-pooled, L2-normalised) and a FAISS inner-product index.

Passage embeddings are computed by a Ray Data actor pool (GPU when present) and kept as a
memory-mappable ``embeddings.npy`` beside the FAISS index, so the index can be rebuilt with other
settings without re-encoding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kard_ray.artifacts import save_bytes, save_npy
from kard_ray.config import DenseConfig
from kard_ray.models import resolve_model, safe_load_kwargs


def mean_pool(hidden, mask):
    """Unit-length mean of the token states the attention mask keeps (padding must not dilute it);
    shared by dense retrieval and the bi-encoder reranker, so both embed text the same way."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def embed(model, tokenizer, texts: Sequence[str], max_length: int, device, batch_size: int = 64) -> np.ndarray:
    """Unit vectors of ``texts`` (float32), batch by batch: dense retrieval and the bi-encoder reranker's
    queries and stored passages are all embedded here, so they agree to rounding."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            out.append(mean_pool(model(**enc).last_hidden_state.float(), enc["attention_mask"]).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


class Encoder:
    """Text -> unit vectors with any HF encoder (sentence-transformers style mean pooling)."""

    def __init__(self, model: str, max_length: int = 256, device: str | None = None,
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from kard_ray.artifacts import local_copy

        path = local_copy(model) if "://" in model else resolve_model(model)  # a trained encoder in a run dir
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModel.from_pretrained(path, **safe_load_kwargs(trust_remote_code)).to(self.device).eval()
        self.max_length = max_length

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return embed(self.model, self.tokenizer, texts, self.max_length, self.device, batch_size)


class EmbedBatch:
    """Ray Data actor: one encoder per actor, reused across batches."""

    def __init__(self, model: str, max_length: int, batch_size: int):
        from kard_ray.runtime import use_assigned_cores

        use_assigned_cores()
        self.encoder = Encoder(model, max_length)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        return {"embedding": self.encoder.encode(list(batch["text"]), self.batch_size)}


def embed_passages_with_ray(passages_uri: str, cfg: DenseConfig, use_gpu: bool = False) -> np.ndarray:
    """Embeddings of every passage, in row order, computed by an actor pool."""
    import ray

    ctx = ray.data.DataContext.get_current()
    previous = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # embeddings must come back in row order
    try:
        return _embed_in_order(passages_uri, cfg, use_gpu)
    finally:
        ctx.execution_options.preserve_order = previous  # do not change other pipelines of this driver


def _embed_in_order(passages_uri: str, cfg: DenseConfig, use_gpu: bool) -> np.ndarray:
    import ray

    from kard_ray.runtime import cores_per_worker, is_embedded

    ds = ray.data.read_parquet(passages_uri, columns=["text"])
    ds = ds.map_batches(EmbedBatch, fn_constructor_kwargs={"model": cfg.encoder, "max_length": cfg.max_length,
                                                           "batch_size": cfg.batch_size},
                        compute=ray.data.ActorPoolStrategy(size=cfg.actors), batch_size=cfg.batch_size * 4,
                        batch_format="numpy", num_gpus=1 if use_gpu else 0,
                        num_cpus=cores_per_worker(None, cfg.actors, is_embedded()))
    chunks = [b["embedding"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    return np.concatenate(chunks).astype(np.float32)


def build_faiss(embeddings: np.ndarray, cfg: DenseConfig):
    import faiss

    n, d = embeddings.shape
    if cfg.index == "flat" or n < 1000:
        index = faiss.IndexFlatIP(d)
    elif cfg.index in ("ivf", "ivfpq"):
        nlist = max(1, min(cfg.ivf_lists, n // 39))
        quantizer = faiss.IndexFlatIP(d)
        if cfg.index == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if d % cfg.pq_m:
                raise ValueError(f"retrieval.dense.pq_m ({cfg.pq_m}) must divide the embedding size ({d})")
            index = faiss.IndexIVFPQ(quantizer, d, nlist, cfg.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        sample = np.sort(np.random.default_rng(0).permutation(n)[: max(cfg.train_sample, nlist * 39)])
        index.train(np.ascontiguousarray(embeddings[sample]))
        index.nprobe = min(nlist, cfg.nprobe)
    else:
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(embeddings)
    return index


def write_dense_index(embeddings: np.ndarray, cfg: DenseConfig, out_dir: str) -> dict:
    import faiss

    index = build_faiss(embeddings, cfg)
    blob = faiss.serialize_index(index).tobytes()
    save_npy(f"{out_dir}/embeddings.npy", embeddings)
    save_bytes(f"{out_dir}/faiss.index", blob)
    compressed = isinstance(index, faiss.IndexIVFPQ)  # a small KB falls back to flat: nothing to re-rank
    meta = {"format": "kard-dense/1", "encoder": cfg.encoder, "max_length": cfg.max_length,
            "index": type(index).__name__, "n_docs": int(embeddings.shape[0]), "dim": int(embeddings.shape[1]),
            "refine": cfg.refine if compressed else 0, "index_bytes": len(blob)}  # what the index holds in RAM
    save_bytes(f"{out_dir}/meta.json", json.dumps(meta, indent=1).encode())
    return meta


class DenseIndex:
    """A FAISS index over the passages; a compressed (ivfpq) one re-ranks its candidates exactly with the
    float32 vectors, memory-mapped from disk."""

    def __init__(self, path: str, encoder: Encoder | None = None):
        import faiss

        self.meta = self.read_meta(path)
        self.index = faiss.read_index(f"{path}/faiss.index")
        self.encoder = encoder or Encoder(self.meta["encoder"], self.meta["max_length"])
        self.n_docs = self.meta["n_docs"]
        self.refine = int(self.meta.get("refine", 0))
        self.vectors = np.load(f"{path}/embeddings.npy", mmap_mode="r") if self.refine else None

    @staticmethod
    def read_meta(path: str) -> dict:
        return json.loads(Path(f"{path}/meta.json").read_text(encoding="utf-8"))

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
        if not queries:
            return []
        return self.search_vectors(self.encoder.encode(queries), k)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        k = min(k, self.n_docs)
        scores, rows = self.index.search(vectors, min(k * max(self.refine, 1), self.n_docs))
        out = []
        for q, r, s in zip(vectors, rows, scores):
            r = r[r >= 0].astype(np.int64)
            if self.vectors is None:
                out.append((r[:k], s[: len(r)][:k].astype(np.float64)))
                continue
            r = np.sort(r)  # sequential reads of the memory map
            exact = self.vectors[r] @ q
            order = np.lexsort((r, -exact))[:k]
            out.append((r[order], exact[order].astype(np.float64)))
        return out

    def search(self, query: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.search_many([query], k)[0]
