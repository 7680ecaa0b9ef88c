"""Dense retrieval: a sentence encoder (mean-pooled, L2-normalised) and a FAISS inner-product index.

Passage embeddings are computed by a Ray Data actor pool (GPU when present): each actor reads its own row
ranges of the passage store and writes them as part files, so no text or vector passes through the driver.
The parts are streamed into a memory-mappable ``embeddings.npy`` beside the FAISS index (built from that
memory map), so the index can be rebuilt with other settings without re-encoding, and a killed build
resumes at the first missing part.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from kard_ray.config import DenseConfig
from kard_ray.devices import process_device
from kard_ray.efficiency import count_tokens
from kard_ray.fs import delete_path, read_json_if_exists, resolve_fs, save_bytes, save_npy, upload_file
from kard_ray.models import resolve_model, safe_load_kwargs
from kard_ray.retrieval.passages import read_text_range, shard_bounds
from kard_ray.runtime import cores_per_worker, is_embedded, use_assigned_cores

PART_BATCHES = 64  # encoder batches per part file (and per actor call): 8192 rows at the default batch size
ADD_ROWS = 65_536  # vectors handed to FAISS at a time, read from the memory map


def mean_pool(hidden, mask):
    """Unit-length mean of the token states the attention mask keeps (padding must not dilute it);
    shared by dense retrieval and the bi-encoder reranker, so both embed text the same way."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def token_lengths(tokenizer, texts: Sequence[str], max_length: int, chunk: int = 4096) -> np.ndarray:
    """Tokens per text as encoding truncates them; tokenizing is ~0.3% of a CPU forward pass, so counting
    first costs little and lets batches be cut by tokens, not characters (a poor proxy for rare words)."""
    lengths = [tokenizer(list(texts[i : i + chunk]), truncation=True, max_length=max_length,
                         return_length=True)["length"] for i in range(0, len(texts), chunk)]
    return np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def embed_batch(model, tokenizer, texts: Sequence[str], max_length: int, device, stats: dict | None = None):
    """Unit vectors of ``texts`` as a tensor, one forward call padded to the batch's longest text (with
    gradients when the caller trains); ``stats`` counts the token positions (``count_tokens``)."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    count_tokens(stats, enc)
    return mean_pool(model(**enc).last_hidden_state.float(), enc["attention_mask"])


def embed(model, tokenizer, texts: Sequence[str], max_length: int, device, batch_size: int = 64) -> np.ndarray:
    """Unit vectors of ``texts`` (float32, in their order): dense retrieval and the bi-encoder reranker's
    queries and stored passages are all embedded here, so they agree to rounding. Batches are cut from the
    texts sorted by token count, longest first (sentence-transformers sorts by characters), so they carry
    almost no padding."""
    import torch

    order = np.argsort(-token_lengths(tokenizer, texts, max_length), kind="stable")
    out: np.ndarray | None = None
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            rows = order[i : i + batch_size]
            vectors = embed_batch(model, tokenizer, [texts[j] for j in rows], max_length, device).cpu().numpy()
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), np.float32)
            out[rows] = vectors
    return out if out is not None else np.zeros((0, model.config.hidden_size), np.float32)


class Encoder:
    """Text -> unit vectors with any HF encoder (sentence-transformers style mean pooling)."""

    def __init__(self, model: str, max_length: int = 256, device: str | None = None,
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer


        path = resolve_model(model)  # an offline alias, a hub id, or a trained encoder's URI in a run dir
        self.device = torch.device(device) if device else process_device()
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        # fp32 on every device: stored vectors and the queries compared with them may be computed on different
        # devices, and must agree to rounding wherever they were (half precision would move rankings)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32,
                                               **safe_load_kwargs(trust_remote_code)).to(self.device).eval()
        self.max_length = max_length

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return embed(self.model, self.tokenizer, texts, self.max_length, self.device, batch_size)


# --------------------------------------------------------------------------- KB embedding as part files


def part_name(start: int) -> str:
    return f"emb-{start:012d}.npy"


def part_ranges(n_rows: int, cfg: DenseConfig) -> list[tuple[int, int]]:
    """The [start, end) row ranges, one per part file and per actor call."""
    step = cfg.batch_size * PART_BATCHES
    return [(s, min(s + step, n_rows)) for s in range(0, n_rows, step)]


class EncodeRanges:
    """Ray Data actor: one encoder per actor; each call reads its row ranges' texts from the passage store
    and writes their vectors as one part file per range, returning only the ranges."""

    def __init__(self, arrow_uri: str, parts_uri: str, model: str, max_length: int, batch_size: int):
        use_assigned_cores()
        self.arrow_uri, self.parts_uri, self.batch_size = arrow_uri, parts_uri, batch_size
        self.encoder = Encoder(model, max_length)

    def __call__(self, batch: dict) -> dict:
        for start, end in zip(batch["start"].tolist(), batch["end"].tolist()):
            texts = read_text_range(self.arrow_uri, start, end)
            save_npy(f"{self.parts_uri}/{part_name(start)}", self.encoder.encode(texts, self.batch_size))  # atomic
        return batch


def _written_parts(parts_uri: str) -> set[str]:
    import pyarrow.fs as pafs

    fs, path = resolve_fs(parts_uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return {i.base_name for i in infos if i.type == pafs.FileType.File}


def encode_parts(passages_arrow_uri: str, n_rows: int, cfg: DenseConfig, out_dir: str) -> list[tuple[int, int]]:
    """Encode every range of rows whose part file ``out_dir/parts/emb-<start>.npy`` is missing (parts are
    written atomically, so one that exists is complete: a killed build resumes); returns all ranges."""
    ranges = part_ranges(n_rows, cfg)
    parts_uri = f"{out_dir}/parts"
    written = _written_parts(parts_uri)
    todo = [r for r in ranges if part_name(r[0]) not in written]
    if todo:
        _encode_on_ray(passages_arrow_uri, todo, cfg, parts_uri)
        written = _written_parts(parts_uri)
    missing = [s for s, _ in ranges if part_name(s) not in written]
    if missing:
        raise RuntimeError(f"{len(missing)} embedding parts were not written (first rows: {missing[:3]})")
    return ranges


def _encode_on_ray(arrow_uri: str, ranges: list[tuple[int, int]], cfg: DenseConfig, parts_uri: str) -> None:
    import ray


    # one block per range, so a pool of several actors shares the ranges (one block would go to one actor)
    ds = ray.data.from_items([{"start": s, "end": e} for s, e in ranges], override_num_blocks=len(ranges))
    ds = ds.map_batches(EncodeRanges, fn_constructor_kwargs={"arrow_uri": arrow_uri, "parts_uri": parts_uri,
                                                             "model": cfg.encoder, "max_length": cfg.max_length,
                                                             "batch_size": cfg.batch_size},
                        compute=ray.data.ActorPoolStrategy(size=cfg.actors), batch_size=1, batch_format="numpy",
                        num_gpus=cfg.actor_gpus, num_cpus=cores_per_worker(None, cfg.actors, is_embedded()))
    ds.take_all()  # (start, end) records only: the vectors are in the part files


def _read_npy(fs, path: str) -> np.ndarray:
    with fs.open_input_file(path) as f:
        return np.load(io.BytesIO(f.read()))


def concat_parts(parts_uri: str, ranges: list[tuple[int, int]], path: str) -> None:
    """One float32 ``.npy`` of shape (rows, dim) at local ``path``, written part by part in row order, so
    at most one part is in memory; every part must hold exactly its range's rows."""
    fs, parts_dir = resolve_fs(parts_uri)
    dim = 0
    with open(path, "wb") as f:
        for start, end in ranges:
            part = _read_npy(fs, f"{parts_dir}/{part_name(start)}")
            if not dim:
                dim = part.shape[1]
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                          "shape": (ranges[-1][1], dim)}
                np.lib.format.write_array_header_1_0(f, header)
            if part.shape != (end - start, dim):
                raise ValueError(f"{part_name(start)} holds {part.shape}, expected {(end - start, dim)}")
            f.write(np.ascontiguousarray(part, "<f4").data)


@contextlib.contextmanager
def _local_target(uri: str) -> Iterator[str]:
    """A local file to write ``uri``'s content in, which becomes ``uri`` only when the block succeeds:
    renamed into place on local disk, uploaded from a temporary folder to an object store."""
    import pyarrow.fs as pafs

    fs, path = resolve_fs(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        with tempfile.TemporaryDirectory(prefix="kard-dense-") as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            yield local
            upload_file(local, uri)
        return
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    partial = os.path.join(folder, f".{name}.partial")  # hidden, and fixed: a killed build's is overwritten
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def index_parts(ranges: list[tuple[int, int]], cfg: DenseConfig, out_dir: str) -> dict:
    """``embeddings.npy`` streamed from ``out_dir/parts``, FAISS built from its memory map, then the parts
    deleted (last: until the index is written they are the build's checkpoint)."""
    if not ranges:
        raise ValueError("no passages to embed")
    with _local_target(f"{out_dir}/embeddings.npy") as path:
        concat_parts(f"{out_dir}/parts", ranges, path)
        meta = write_faiss(np.load(path, mmap_mode="r"), cfg, out_dir)
    fs, parts_dir = resolve_fs(f"{out_dir}/parts")
    fs.delete_dir(parts_dir)
    return meta


def build_dense_index(passages_arrow_uri: str, n_rows: int, cfg: DenseConfig, out_dir: str) -> dict:
    """The KB's dense index folder (embeddings.npy, faiss.index, meta.json) from the passage store, at any
    scale: vectors go actor -> part files -> one file, never through the driver's memory."""
    return index_parts(encode_parts(passages_arrow_uri, n_rows, cfg, out_dir), cfg, out_dir)


# --------------------------------------------------------------------------- FAISS


def _empty_index(n: int, d: int, cfg: DenseConfig):
    import faiss

    if cfg.index == "flat" or n < 1000:
        return faiss.IndexFlatIP(d)
    if cfg.index == "hnsw":
        return faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    nlist = max(1, min(cfg.ivf_lists, n // 39))
    quantizer = faiss.IndexFlatIP(d)
    if cfg.index == "ivf":
        return faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    if d % cfg.pq_m:
        raise ValueError(f"retrieval.dense.pq_m ({cfg.pq_m}) must divide the embedding size ({d})")
    return faiss.IndexIVFPQ(quantizer, d, nlist, cfg.pq_m, 8, faiss.METRIC_INNER_PRODUCT)


def trained_index(embeddings: np.ndarray, cfg: DenseConfig):
    """The configured index, empty; IVF kinds trained on a seeded sample of ``embeddings``."""
    import faiss

    n, d = embeddings.shape
    index = _empty_index(n, d, cfg)
    if isinstance(index, faiss.IndexIVF):
        size = min(n, max(cfg.train_sample, index.nlist * 39))
        sample = np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))
        index.train(np.ascontiguousarray(embeddings[sample], np.float32))
        index.nprobe = min(index.nlist, cfg.nprobe)
    return index


def _add(index, embeddings: np.ndarray, start: int, end: int) -> None:
    """Rows [start, end) into ``index``, ``ADD_ROWS`` at a time: a memory map is never read into RAM whole."""
    for i in range(start, end, ADD_ROWS):
        index.add(np.ascontiguousarray(embeddings[i : min(i + ADD_ROWS, end)], np.float32))


def build_faiss(embeddings: np.ndarray, cfg: DenseConfig):
    """The configured index over ``embeddings`` (an array or a memory map), as one FAISS index."""
    index = trained_index(embeddings, cfg)
    _add(index, embeddings, 0, len(embeddings))
    return index


def _write_faiss(index, uri: str) -> int:
    """``index`` written to a local file, then renamed or uploaded to ``uri``; its size in bytes."""
    import faiss

    with _local_target(uri) as path:
        faiss.write_index(index, path)
        return os.path.getsize(path)


def _read_faiss(uri: str):
    import faiss

    fs, path = resolve_fs(uri)
    with fs.open_input_file(path) as f:
        return faiss.deserialize_index(np.frombuffer(f.read(), np.uint8))


def _size(uri: str) -> int | None:
    """A file's size, or None when there is none."""
    import pyarrow.fs as pafs

    fs, path = resolve_fs(uri)
    info = fs.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def write_faiss(embeddings: np.ndarray, cfg: DenseConfig, out_dir: str) -> dict:
    """The FAISS index of ``embeddings`` in ``out_dir`` and its ``meta.json``: one ``faiss.index``, or with
    ``shard_rows`` shards ``faiss/shard-NNNNN.index`` cloned from one trained empty index (kept as
    ``faiss/trained.index``, so a resumed build adds to the same quantiser), each filled, written and freed
    before the next. Shards already written are kept when ``faiss/plan.json`` (rows, shard bounds, index
    settings) is this build's; any other plan's files are deleted first."""
    import faiss

    bounds = shard_bounds(len(embeddings), 1, cfg.shard_rows or None)
    if len(bounds) == 1:
        delete_path(f"{out_dir}/faiss")
        return save_index(build_faiss(embeddings, cfg), cfg, out_dir)
    delete_path(f"{out_dir}/faiss.index")
    plan = {"rows": len(embeddings), "dim": int(embeddings.shape[1]), "bounds": [list(b) for b in bounds],
            "settings": cfg.model_dump(include={"encoder", "max_length", "index", "ivf_lists", "nprobe", "pq_m",
                                                "train_sample", "hnsw_m"})}
    if read_json_if_exists(f"{out_dir}/faiss/plan.json") != plan:
        delete_path(f"{out_dir}/faiss")
        save_bytes(f"{out_dir}/faiss/plan.json", json.dumps(plan).encode())
    trained_uri = f"{out_dir}/faiss/trained.index"
    if _size(trained_uri) is not None:
        trained = _read_faiss(trained_uri)
    else:
        trained = trained_index(embeddings, cfg)
        _write_faiss(trained, trained_uri)
    shards = []
    for i, (start, end) in enumerate(bounds):
        name = f"faiss/shard-{i:05d}.index"
        size = _size(f"{out_dir}/{name}")
        if size is None:
            shard = faiss.clone_index(trained)
            _add(shard, embeddings, start, end)
            size = _write_faiss(shard, f"{out_dir}/{name}")
            del shard
        shards.append({"file": name, "start": start, "rows": end - start, "bytes": size})
    return _save_meta(trained, cfg, out_dir, sum(s["bytes"] for s in shards), n_docs=len(embeddings),
                      shards=shards)


def _save_meta(index, cfg: DenseConfig, out_dir: str, index_bytes: int, n_docs: int | None = None,
               shards: list[dict] | None = None) -> dict:
    import faiss

    compressed = isinstance(index, faiss.IndexIVFPQ)  # a small KB falls back to flat: nothing to re-rank
    meta = {"format": "kard-dense/1", "encoder": cfg.encoder, "max_length": cfg.max_length,
            "index": type(index).__name__, "n_docs": int(index.ntotal if n_docs is None else n_docs),
            "dim": int(index.d), "refine": cfg.refine if compressed else 0, "index_bytes": index_bytes}
    if shards:
        meta["shards"] = shards
    save_bytes(f"{out_dir}/meta.json", json.dumps(meta, indent=1).encode())
    return meta


def save_index(index, cfg: DenseConfig, out_dir: str) -> dict:
    """``faiss.index`` (written to a local file, then renamed or uploaded) and ``meta.json``."""
    return _save_meta(index, cfg, out_dir, _write_faiss(index, f"{out_dir}/faiss.index"))


def write_dense_index(embeddings: np.ndarray, cfg: DenseConfig, out_dir: str) -> dict:
    """The index folder for vectors already in memory (small KBs, benchmarks)."""
    save_npy(f"{out_dir}/embeddings.npy", embeddings)
    return write_faiss(embeddings, cfg, out_dir)


class DenseIndex:
    """A FAISS index over the passages; a compressed (ivfpq) one re-ranks its candidates exactly with the
    float32 vectors, memory-mapped from disk."""

    def __init__(self, path: str, encoder: Encoder | None = None):
        import faiss

        self.meta = self.read_meta(path)
        files = self.meta.get("shards") or [{"file": "faiss.index", "start": 0}]
        self.shards = [(int(f["start"]), faiss.read_index(f"{path}/{f['file']}")) for f in files]
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

    def candidates(self, vectors: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's (scores, rows) of the ``depth`` best per query, rows -1 past the end: every shard searched,
        its rows offset to KB rows, and the shards' lists merged by score (ties by row)."""
        found = []
        for start, index in self.shards:
            scores, rows = index.search(vectors, min(depth, index.ntotal))
            found.append((scores, np.where(rows >= 0, rows + start, -1)))
        if len(found) == 1:
            return found[0]
        scores = np.concatenate([s for s, _ in found], axis=1)
        rows = np.concatenate([r for _, r in found], axis=1)
        scores[rows < 0] = -np.inf
        order = np.lexsort((rows, -scores))[:, :depth]  # sorts along each query's row
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        k = min(k, self.n_docs)
        scores, rows = self.candidates(vectors, min(k * max(self.refine, 1), self.n_docs))
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
