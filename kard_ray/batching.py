"""Length-grouped batching: examples of similar length share a batch, so padding stays small.

Within random windows of ``batch_size * window`` examples, sort by length and cut into batches,
then shuffle the batches: batches stay random across the epoch while their rows are alike.
"""

from __future__ import annotations

import math

import numpy as np


def length_grouped_batches(lengths: list[int] | np.ndarray, batch_size: int, rng: np.random.Generator,
                           window: int = 50, group: bool = True) -> list[list[int]]:
    n = len(lengths)
    order = rng.permutation(n)
    if group:
        lengths = np.asarray(lengths)
        span = batch_size * window
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in np.split(order, range(span, n, span))]
                               ) if n else order
    batches = [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    rng.shuffle(batches)
    return batches


def epoch_batches(epoch: int, rank: int, seed: int, batch_size: int, steps: int,
                  lengths: list[int] | np.ndarray | None = None, n_rows: int | None = None) -> list[list[int]]:
    """One worker's batches (row indices) for one epoch, the same every time they are asked for, so a resumed
    run starts at its batch instead of replaying a stream: a seeded order of its rows (length-grouped when
    ``lengths`` are given), repeated or cut to ``steps`` batches so that every worker takes as many steps
    (the reranker and the student both train on it)."""
    rng = np.random.default_rng(seed * 1000 + epoch * 10 + rank)
    n = len(lengths) if lengths is not None else int(n_rows or 0)
    batches = length_grouped_batches(lengths if lengths is not None else np.zeros(n), batch_size, rng,
                                     group=lengths is not None)
    return (batches * math.ceil(steps / max(len(batches), 1)))[:steps]


def padding_share(lengths: list[int] | np.ndarray, batches: list[list[int]]) -> float:
    """Share of padded positions when every batch is padded to its longest row."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / padded if padded else 0.0
