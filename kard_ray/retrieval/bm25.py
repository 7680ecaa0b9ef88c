"""Exact Okapi BM25 as sparse-matrix arithmetic, sharded and memory-mapped.

Scores equal ``rank_bm25.BM25Okapi`` for the same tokens and (k1, b, epsilon):

    idf(t)   = ln(N - n_t + 0.5) - ln(n_t + 0.5), and where negative: epsilon * mean_t idf(t)
    w(t, d)  = idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))
    score(q, d) = sum over query tokens t (with repetition) of w(t, d)

Every w(t, d) is precomputed at build time into a term-major CSR matrix per shard, so a query
costs the length of its terms' posting lists, not the size of the corpus. IDF and avgdl are
*global* (computed from all shards' counts), so a sharded index scores every passage exactly as
the unsharded one does, and the merged top-k is the same. Ties are broken by the lower row, in
shards and in the merge alike.

Build: phase 1 counts terms per shard (parallel), phase 2 merges vocabularies and document
frequencies (driver, small), phase 3 writes each shard's weights (parallel).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from kard_ray.fs import delete_path, local_copy, resolve_fs, save_bytes, save_npy
from kard_ray.retrieval import bm25_kernel
from kard_ray.retrieval.bm25_kernel import topk_batch
from kard_ray.retrieval.passages import shard_bounds
from kard_ray.retrieval.tokenizer import Tokenizer

DENSE_SHARE = 1 / 6  # a term in more than this share of a shard's passages is stored as a dense row


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25


@dataclass
class ShardCounts:
    """Phase-1 output for one shard: term counts with shard-local term ids."""

    vocab: list[str]
    df: np.ndarray  # per local term: documents containing it
    doc_len: np.ndarray  # tokens per document
    doc: np.ndarray  # (doc, term, tf) triplets, one per distinct term of each document
    term: np.ndarray
    tf: np.ndarray


def count_terms(texts: Sequence[str], tokenizer: Tokenizer, chunk: int = 20_000) -> ShardCounts:
    """Term counts of a shard, tokenised in chunks so peak memory stays near the size of the result."""
    ids: dict[str, int] = {}
    doc_len = np.zeros(len(texts), dtype=np.int32)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(texts), chunk):
        flat: list[int] = []
        for i, text in enumerate(texts[start : start + chunk], start=start):
            toks = tokenizer(text)
            doc_len[i] = len(toks)
            flat.extend([ids.setdefault(t, len(ids)) for t in toks])
        terms = np.asarray(flat, dtype=np.int64)
        docs = np.repeat(np.arange(start, min(start + chunk, len(texts)), dtype=np.int64),
                         doc_len[start : start + chunk])
        width = max(len(ids), 1)
        keys, tf = np.unique(docs * width + terms, return_counts=True)
        parts.append(((keys // width).astype(np.int32), (keys % width).astype(np.int32), tf.astype(np.int32)))
    doc = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int32)
    term = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int32)
    tf = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int32)
    df = np.bincount(term, minlength=len(ids)).astype(np.int64)
    return ShardCounts(list(ids), df, doc_len, doc, term, tf)


@dataclass
class GlobalStats:
    vocab: dict[str, int]
    idf: np.ndarray
    n_docs: int
    avgdl: float


def rank_bm25_idf(df: np.ndarray, n_docs: int, epsilon: float) -> np.ndarray:
    """IDF exactly as rank_bm25.BM25Okapi computes it (negative values floored at epsilon * mean idf)."""
    idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
    if len(idf):
        eps = epsilon * (idf.sum() / len(idf))
        idf = np.where(idf < 0, eps, idf)
    return idf


def merge_stats(summaries: Sequence[tuple[list[str], np.ndarray, int, int]], epsilon: float) -> tuple[
        GlobalStats, list[np.ndarray]]:
    """Phase 2: global vocabulary, document frequencies and idf; local-to-global term maps per shard."""
    vocab: dict[str, int] = {}
    maps: list[np.ndarray] = []
    for local_vocab, _, _, _ in summaries:
        maps.append(np.fromiter((vocab.setdefault(t, len(vocab)) for t in local_vocab), dtype=np.int64,
                                count=len(local_vocab)))
    df = np.zeros(len(vocab), dtype=np.int64)
    for (_, local_df, _, _), m in zip(summaries, maps):
        np.add.at(df, m, local_df)
    n_docs = sum(s[3] for s in summaries)
    total_len = sum(s[2] for s in summaries)
    if n_docs == 0:
        raise ValueError("cannot build a BM25 index over zero passages")
    return GlobalStats(vocab, rank_bm25_idf(df, n_docs, epsilon), n_docs, total_len / n_docs), maps


def shard_weights(counts: ShardCounts, g: np.ndarray, idf: np.ndarray, avgdl: float,
                  params: BM25Params) -> np.ndarray:
    """w(t, d) of every (doc, term) pair, computed in place (a few arrays of the postings' length at most):
    idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl)), in that order of operations."""
    tf = counts.tf.astype(np.float64)
    denom = counts.doc_len[counts.doc].astype(np.float64)
    denom *= params.b
    denom /= avgdl
    denom += 1 - params.b
    denom *= params.k1
    denom += tf
    w = idf[g]
    w *= tf
    del tf
    w *= params.k1 + 1
    w /= denom
    return w


def write_shard(counts: ShardCounts, local_to_global: np.ndarray, idf: np.ndarray, avgdl: float,
                params: BM25Params, out_dir: str) -> int:
    """Phase 3: this shard's term-major CSR of precomputed weights, as .npy files for memory-mapping."""
    g = local_to_global[counts.term]
    w = shard_weights(counts, g, idf, avgdl, params)
    n = len(counts.doc_len)
    # Terms in a large share of this shard's passages are stored as dense rows: adding a contiguous
    # row is several times faster than scattering a posting list that long (and adding 0.0 is exact).
    local_df = np.bincount(g, minlength=len(idf))
    dense_terms = np.flatnonzero(local_df > DENSE_SHARE * n)
    dense_row = np.full(len(idf), -1, dtype=np.int32)
    dense_row[dense_terms] = np.arange(len(dense_terms), dtype=np.int32)
    sel = dense_row[g] >= 0
    dense = np.zeros((len(dense_terms), n), dtype=np.float64)
    dense[dense_row[g[sel]], counts.doc[sel]] = w[sel]
    keep = ~sel
    g, w, doc = g[keep], w[keep], counts.doc[keep]
    # Term-major CSR: postings arrive sorted by (doc, term), so a stable sort by term keeps docs ascending.
    order = np.argsort(g, kind="stable")
    indptr = np.zeros(len(idf) + 1, dtype=np.int64)
    np.cumsum(np.bincount(g, minlength=len(idf)), out=indptr[1:])
    del g
    save_npy(f"{out_dir}/indices.npy", doc[order].astype(np.int32))
    del doc
    save_npy(f"{out_dir}/data.npy", w[order])
    save_npy(f"{out_dir}/indptr.npy", indptr)
    save_npy(f"{out_dir}/dense_row.npy", dense_row)
    save_npy(f"{out_dir}/dense.npy", dense)
    return int(len(keep))


# --------------------------------------------------------------------------- build


Summary = tuple[list[str], np.ndarray, int, int]  # local vocabulary, its df, total tokens, documents
_COUNT_ARRAYS = ("df", "doc_len", "doc", "term", "tf")


def save_counts(counts: ShardCounts, uri: str) -> None:
    """Phase-1 output on disk (the run dir), so it neither waits in memory nor is lost with a killed build;
    ``vocab.json`` is written last and marks it complete."""
    for name in _COUNT_ARRAYS:
        save_npy(f"{uri}/{name}.npy", getattr(counts, name))
    save_bytes(f"{uri}/vocab.json", json.dumps(counts.vocab).encode())


def load_counts(uri: str) -> ShardCounts | None:
    """A shard's saved phase-1 output, memory-mapped; None when it was not completed."""
    fs, marker = resolve_fs(f"{uri}/vocab.json")
    if fs.get_file_info(marker).type != pafs.FileType.File:
        return None
    path = local_copy(uri) if "://" in uri else uri
    arrays = {n: np.load(f"{path}/{n}.npy", mmap_mode="r") for n in _COUNT_ARRAYS}
    return ShardCounts(vocab=json.loads(Path(f"{path}/vocab.json").read_text(encoding="utf-8")), **arrays)


def _summary(counts: ShardCounts) -> Summary:
    return counts.vocab, np.asarray(counts.df), int(counts.doc_len.sum()), len(counts.doc_len)


def _phase1(texts_of: Callable[[int, int], list[str]], start: int, end: int, tokenizer: Tokenizer,
            counts_uri: str | None = None):
    """Count one shard's terms; with ``counts_uri`` saved there (and reused if a killed build saved them)."""
    counts = load_counts(counts_uri) if counts_uri else None
    resumed = counts is not None
    if counts is None:
        counts = count_terms(texts_of(start, end), tokenizer)
        if counts_uri:
            save_counts(counts, counts_uri)
    return _summary(counts), (counts_uri or counts), resumed


def _phase3(counts: ShardCounts | str, local_to_global: np.ndarray, idf: np.ndarray, avgdl: float,
            params: BM25Params, out_dir: str) -> int:
    """Write one shard's weights (from counts in memory or saved by phase 1); ``done.json`` marks it."""
    done = f"{out_dir}/done.json"
    fs, path = resolve_fs(done)
    if fs.get_file_info(path).type == pafs.FileType.File:  # written before a kill: same inputs, same bytes
        with fs.open_input_stream(path) as f:
            return int(json.loads(f.read())["postings"])
    if isinstance(counts, str):
        counts = load_counts(counts)
    nnz = write_shard(counts, local_to_global, idf, avgdl, params, out_dir)
    save_bytes(done, json.dumps({"postings": nnz}).encode())
    return nnz


def build_bm25_index(
    texts_of: Callable[[int, int], list[str]],
    n_rows: int,
    out_dir: str,
    tokenizer: Tokenizer,
    params: BM25Params = BM25Params(),
    shards: int = 1,
    use_ray: bool = False,
    shard_rows: int | None = None,
) -> dict:
    """Build an index of rows [0, n_rows); ``texts_of(start, end)`` returns those rows' texts.

    With ``use_ray`` each shard's phases 1 and 3 run as Ray tasks (texts_of must then be serialisable,
    e.g. a function reading the passage store), phase-1 counts go to ``out_dir/_counts`` rather than the
    object store, and only vocabularies reach the driver. A build killed midway resumes from what the
    counts and the finished shards (``done.json``) hold. ``shard_rows`` caps a shard's size, and so each
    task's memory, whatever the KB's size.
    """
    bounds = shard_bounds(n_rows, shards, shard_rows)
    shard_dirs = [f"{out_dir}/shard-{i:05d}" for i in range(len(bounds))]
    if use_ray:
        import ray

        # max_calls=1: each worker exits after its shard, so its peak heap is returned to the OS.
        p1 = ray.remote(max_calls=1)(_phase1)
        results = ray.get([p1.remote(texts_of, a, b, tokenizer, f"{out_dir}/_counts/shard-{i:05d}")
                           for i, (a, b) in enumerate(bounds)])
        stats, maps = merge_stats([r[0] for r in results], params.epsilon)
        idf_ref = ray.put(stats.idf)
        p3 = ray.remote(max_calls=1)(_phase3)
        nnz = ray.get([p3.remote(r[1], m, idf_ref, stats.avgdl, params, d)
                       for r, m, d in zip(results, maps, shard_dirs)])
    else:
        results = [_phase1(texts_of, a, b, tokenizer) for a, b in bounds]
        stats, maps = merge_stats([r[0] for r in results], params.epsilon)
        nnz = [_phase3(r[1], m, stats.idf, stats.avgdl, params, d) for r, m, d in zip(results, maps, shard_dirs)]
    save_npy(f"{out_dir}/idf.npy", stats.idf)
    save_bytes(f"{out_dir}/vocab.json", json.dumps(list(stats.vocab)).encode())
    save_bytes(f"{out_dir}/tokenizer.json", tokenizer.to_json().encode())
    meta = {
        "format": "kard-bm25/1",
        "params": asdict(params),
        "n_docs": stats.n_docs,
        "avgdl": stats.avgdl,
        "vocab_size": len(stats.vocab),
        "postings": int(sum(nnz)),
        "shards": [{"dir": os.path.basename(d), "start": a, "end": b} for d, (a, b) in zip(shard_dirs, bounds)],
    }
    save_bytes(f"{out_dir}/meta.json", json.dumps(meta, indent=1).encode())
    delete_path(f"{out_dir}/_counts")
    return {**meta, "shards_resumed": sum(r[2] for r in results)}  # counted before a kill, not tokenised again


# --------------------------------------------------------------------------- query


class _Shard:
    def __init__(self, path: str, start: int, end: int, mmap: bool):
        mode = "r" if mmap else None
        self.indptr = np.load(f"{path}/indptr.npy", mmap_mode=mode)
        self.indices = np.load(f"{path}/indices.npy", mmap_mode=mode)
        self.data = np.load(f"{path}/data.npy", mmap_mode=mode)
        self.dense_row = np.load(f"{path}/dense_row.npy", mmap_mode=mode)
        self.dense = np.load(f"{path}/dense.npy", mmap_mode=mode)
        self.start, self.n = start, end - start
        self._local = threading.local()

    def _buffer(self) -> np.ndarray:
        """Per-thread score accumulator, kept zeroed between queries."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.zeros(self.n, dtype=np.float64)
        return buf

    def accumulate(self, terms: np.ndarray, mult: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows with a nonzero score, ascending; their scores). Cost: O(postings) + one O(n) scan."""
        scores = self._buffer()
        for t, c in zip(terms, mult):
            d = self.dense_row[t]
            if d >= 0:
                scores += self.dense[d] if c == 1 else self.dense[d] * c
                continue
            s, e = self.indptr[t], self.indptr[t + 1]
            if e > s:
                w = self.data[s:e]
                scores[self.indices[s:e]] += w if c == 1 else w * c
        rows = np.flatnonzero(scores)
        out = scores[rows]
        if len(rows) > self.n // 8:
            scores.fill(0.0)  # leave the buffer clean for the next query
        else:
            scores[rows] = 0.0
        return rows, out

    def topk(self, terms: np.ndarray, mult: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows, scores = self.accumulate(terms, mult)
        rows, scores = select_topk(rows, scores, k)
        return rows + self.start, scores

    def topk_many(self, terms: list[np.ndarray], mults: list[np.ndarray], k: int,
                  compiled: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (global rows, scores) of this shard's k best; ``compiled``: one numba call for all."""
        if not compiled:
            return [self.topk(t, m, k) for t, m in zip(terms, mults)]

        parts = topk_batch(terms, mults, self.indptr, self.indices, self.data, self.dense_row, self.dense, self.n, k)
        return [(rows + self.start, scores) for rows, scores in parts]


def select_topk(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best by score, ties broken by the lower row; sorted best first."""
    if len(rows) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        above = scores > kth
        ties = np.flatnonzero(scores == kth)
        ties = ties[np.argsort(rows[ties], kind="stable")][: k - int(above.sum())]
        pick = np.concatenate([np.flatnonzero(above), ties])
        rows, scores = rows[pick], scores[pick]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


class BM25Index:
    """A (possibly sharded) index loaded memory-mapped: a process holds only the pages it touches."""

    def __init__(self, path: str, mmap: bool = True, kernel: str = "auto"):
        """``kernel``: ``numba`` (compiled, batched), ``numpy``, or ``auto`` (numba when installed)."""
        if kernel not in ("auto", "numba", "numpy"):
            raise ValueError(f"unknown BM25 kernel {kernel!r}; choose auto, numba or numpy")
        if kernel == "numba" and not bm25_kernel.AVAILABLE:
            raise ImportError("the numba BM25 kernel needs numba: pip install numba")
        self.compiled = kernel == "numba" or (kernel == "auto" and bm25_kernel.AVAILABLE)
        self.path = path
        meta = json.loads(Path(f"{path}/meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != "kard-bm25/1":
            raise ValueError(f"{path} is not a kard BM25 index (format {meta.get('format')!r})")
        self.meta = meta
        self.params = BM25Params(**meta["params"])
        self.tokenizer = Tokenizer.from_json(Path(f"{path}/tokenizer.json").read_text(encoding="utf-8"))
        vocab = json.loads(Path(f"{path}/vocab.json").read_text(encoding="utf-8"))
        self.vocab = {t: i for i, t in enumerate(vocab)}
        self.n_docs = meta["n_docs"]
        self.shards = [_Shard(f"{path}/{s['dir']}", s["start"], s["end"], mmap) for s in meta["shards"]]

    def __len__(self) -> int:
        return self.n_docs

    def _query_terms(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        counts: dict[int, int] = {}  # first-occurrence order: accumulate in query order, as rank_bm25 does
        for t in self.tokenizer(query):
            i = self.vocab.get(t)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        return (np.fromiter(counts.keys(), np.int64, len(counts)),
                np.fromiter(counts.values(), np.int64, len(counts)))

    def search(self, query: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the k best passages, best first; passages scoring exactly 0 are never returned."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
        """``search`` for each query; the compiled kernel scores them all in one call per shard."""
        parsed = [self._query_terms(q) for q in queries]
        live = [i for i, (t, _) in enumerate(parsed) if len(t)]
        out = [(np.empty(0, np.int64), np.empty(0, np.float64))] * len(queries)
        if not live:
            return out
        terms, mults = [parsed[i][0] for i in live], [parsed[i][1] for i in live]
        per_shard = [s.topk_many(terms, mults, k, self.compiled) for s in self.shards]
        for j, i in enumerate(live):
            parts = [p[j] for p in per_shard]
            out[i] = parts[0] if len(parts) == 1 else select_topk(
                np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), k)
        return out

    def score_rows(self, query: str, rows: Sequence[int]) -> np.ndarray:
        """BM25(query, passage) for given rows (e.g. a rationale against candidates found otherwise)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros(len(rows), dtype=np.float64)
        terms, mult = self._query_terms(query)
        if len(terms) == 0:
            return out
        for shard in self.shards:
            touched, scores = shard.accumulate(terms, mult)  # rows with nonzero score; the rest score 0
            mine = (rows >= shard.start) & (rows < shard.start + shard.n)
            if mine.any():
                local = rows[mine] - shard.start
                pos = np.searchsorted(touched, local)
                pos = np.minimum(pos, max(len(touched) - 1, 0))
                hit = (touched[pos] == local) if len(touched) else np.zeros(len(local), bool)
                vals = np.where(hit, scores[pos] if len(scores) else 0.0, 0.0)
                out[mine] = vals
        return out

    def full_scores(self, query: str) -> np.ndarray:
        """Scores of every passage (for parity tests against rank_bm25)."""
        return self.score_rows(query, np.arange(self.n_docs))
