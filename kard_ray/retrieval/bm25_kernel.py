"""The BM25 query kernel compiled with numba: one call scores a batch of queries on one shard.

Same arithmetic, in the same order, as the numpy path in ``bm25.py`` (float64, query-term order,
no fastmath), so scores are bitwise identical. The gain is in what numpy cannot do without extra
passes over every passage: a query with a dense (very common) term is scored block by block while the
block is in cache, with the top-k kept in a k-sized sorted buffer; a query without one touches only its
own postings, never all N rows.
numba is optional: without it ``bm25.py`` uses its numpy path.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - exercised where numba is absent
    njit = None


def _offer(row, s, top_r, top_s, filled, k):
    """Insert (row, s) into the sorted top-k (score desc, then row asc); returns the new fill count."""
    if filled == k:
        ws, wr = top_s[k - 1], top_r[k - 1]
        if s < ws or (s == ws and row > wr):
            return filled
        pos = k - 1
    else:
        pos = filled
        filled += 1
    while pos > 0 and (top_s[pos - 1] < s or (top_s[pos - 1] == s and top_r[pos - 1] > row)):
        top_s[pos] = top_s[pos - 1]
        top_r[pos] = top_r[pos - 1]
        pos -= 1
    top_s[pos] = s
    top_r[pos] = row
    return filled


BLOCK = 2048  # rows scored at a time when a query has a dense term: the block's scores stay in L1 cache


def _topk_batch(qptr, qterms, qmult, indptr, indices, data, dense_row, dense, n, k, out_r, out_s, out_n):
    buf = np.zeros(n)
    block = np.zeros(BLOCK)
    pos = np.zeros(len(qterms), dtype=np.int64)
    for q in range(len(qptr) - 1):
        has_dense = False
        for j in range(qptr[q], qptr[q + 1]):
            if dense_row[qterms[j]] >= 0:
                has_dense = True
        top_r, top_s = out_r[q], out_s[q]
        filled = 0
        if has_dense:
            # Most rows score: walk the rows block by block; within a block every term adds in query order
            # (each sparse term resumes where its sorted posting list left off), so each row's sum is formed
            # exactly as in the numpy path; then the block is scanned and cleared while it is in cache.
            for j in range(qptr[q], qptr[q + 1]):
                pos[j] = indptr[qterms[j]]
            threshold = 0.0
            for start in range(0, n, BLOCK):
                end = min(start + BLOCK, n)
                for j in range(qptr[q], qptr[q + 1]):
                    t, c = qterms[j], qmult[j]
                    d = dense_row[t]
                    if d >= 0:
                        row = dense[d]
                        if c == 1:
                            for i in range(start, end):
                                block[i - start] += row[i]
                        else:
                            for i in range(start, end):
                                block[i - start] += row[i] * c
                    else:
                        p, stop = pos[j], indptr[t + 1]
                        while p < stop and indices[p] < end:
                            block[indices[p] - start] += data[p] if c == 1 else data[p] * c
                            p += 1
                        pos[j] = p
                for i in range(end - start):  # ascending rows: a tie never beats a lower row
                    s = block[i]
                    if s != 0.0 and (filled < k or s > threshold):
                        filled = _offer(start + i, s, top_r, top_s, filled, k)
                        if filled == k:
                            threshold = top_s[k - 1]
                block[:] = 0.0
        else:  # only the postings' rows score: add them, then read each once and clear it (0 is never returned)
            for j in range(qptr[q], qptr[q + 1]):
                t, c = qterms[j], qmult[j]
                for p in range(indptr[t], indptr[t + 1]):
                    buf[indices[p]] += data[p] if c == 1 else data[p] * c
            for j in range(qptr[q], qptr[q + 1]):
                t = qterms[j]
                for p in range(indptr[t], indptr[t + 1]):
                    i = indices[p]
                    s = buf[i]
                    if s != 0.0:
                        filled = _offer(i, s, top_r, top_s, filled, k)
                        buf[i] = 0.0
        out_n[q] = filled


if njit is not None:
    _offer = njit(cache=True, nogil=True)(_offer)
    _topk_batch = njit(cache=True, nogil=True)(_topk_batch)

AVAILABLE = njit is not None


def topk_batch(terms: list[np.ndarray], mults: list[np.ndarray], indptr: np.ndarray, indices: np.ndarray,
               data: np.ndarray, dense_row: np.ndarray, dense: np.ndarray, n: int,
               k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: (shard-local rows, scores) of its k best, best first, ties to the lower row."""
    qptr = np.zeros(len(terms) + 1, dtype=np.int64)
    qptr[1:] = np.cumsum([len(t) for t in terms])
    qterms = np.concatenate(terms).astype(np.int64) if terms else np.empty(0, np.int64)
    qmult = np.concatenate(mults).astype(np.int64) if mults else np.empty(0, np.int64)
    k = max(1, min(k, n))
    out_r = np.zeros((len(terms), k), dtype=np.int64)
    out_s = np.zeros((len(terms), k), dtype=np.float64)
    out_n = np.zeros(len(terms), dtype=np.int64)
    _topk_batch(qptr, qterms, qmult, np.asarray(indptr), np.asarray(indices), np.asarray(data),
                np.asarray(dense_row), np.asarray(dense), n, k, out_r, out_s, out_n)
    return [(out_r[q, : out_n[q]], out_s[q, : out_n[q]]) for q in range(len(terms))]
