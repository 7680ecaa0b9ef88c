"""Dense encoding benchmark: this project's ``Encoder.encode`` against sentence-transformers' ``encode`` of the
same model, and (``--ivfpq N``) the KB pipeline at scale with IVF-PQ's recall against exact search.

    python benchmarks/encode.py                      # 4,000 passages: passages/s of both engines, max |diff|
    python benchmarks/encode.py --ivfpq 100000       # also: 100k passages through build_dense_index on Ray,
                                                     # IVF-PQ recall@10 vs flat for 1,000 queries (hours on 2
                                                     # cores: add --work-dir DIR to resume a killed run),
                                                     # and the same IVF-PQ in --shard-rows shards
    ... --ivfpq 100000 --sweep                       # also: recall and ms/query over lists, bytes per vector,
                                                     # lists probed and re-rank depth, from the same vectors

``--corpus text`` (default): 100-word passages of real prose with topics (``text_corpus.py``: the installed
packages' docstrings and botocore's service documentation); ``--corpus words``: random English words.

Throughput: one process, the same torch threads, batch size and max length for both engines, warmed,
best of ``--repeats`` passes each, interleaved (so a noisy neighbour hurts both alike). The IVF-PQ section
embeds the passages as the index stage does (Ray Data actor pool, part files, one memory-mapped file), then
builds flat and IVF-PQ (the config defaults) from the memory map. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PeakMemory, Timer, cpu_info, emit, synthetic_passages, synthetic_queries  # noqa: E402
from text_corpus import real_text_passages, sources, span_queries  # noqa: E402

from kard_ray.config import DenseConfig  # noqa: E402
from kard_ray.models import resolve_model  # noqa: E402
from kard_ray.retrieval.dense import (  # noqa: E402
    DenseIndex,
    Encoder,
    build_dense_index,
    part_name,
    part_ranges,
    write_faiss,
)


def sentence_transformer(model: str, max_length: int):
    """sentence-transformers' own pipeline for the same folder; it must pool the way ours does (mean, unit)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(resolve_model(model), device="cpu")
    st.max_seq_length = max_length
    modules = [type(m).__name__ for m in st]
    pooling = getattr(st[1], "pooling_mode", None) if len(modules) > 1 else None
    if modules != ["Transformer", "Pooling", "Normalize"] or pooling != "mean":
        raise SystemExit(f"{model}: sentence-transformers pipeline {modules} (pooling {pooling}) is not mean + unit")
    return st


def _english_vocabulary(encoder: str) -> list[str]:
    """The encoder's whole-word English vocabulary (one token per word)."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(resolve_model(encoder)).get_vocab()
    return sorted((w for w in vocab if w.isascii() and w.isalpha() and len(w) > 1), key=vocab.get)


def _zipf(n: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** 1.1
    return p / p.sum()


def english_passages(n: int, seed: int, encoder: str) -> list[str]:
    """Passages of about 100 real English words (the encoder's whole-word vocabulary, Zipf frequencies):
    ~100 tokens each, like a 100-word Wikipedia passage. Invented words split into several word pieces
    each and would make every passage hit max_length, overstating the cost of encoding a real KB."""
    words = _english_vocabulary(encoder)
    return synthetic_passages(n, seed=seed, mean_words=100, words=(words, _zipf(len(words))))


def corpus(kind: str, n: int, seed: int, encoder: str) -> tuple[list[str], Callable[[list[str], int, int], list[str]]]:
    """``n`` passages of the chosen corpus and how to draw queries from them."""
    if kind == "text":
        return real_text_passages(n, seed), span_queries
    return english_passages(n, seed, encoder), synthetic_queries


def best_of(engines: dict, texts: list[str], repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best wall time of each engine over ``repeats`` interleaved passes (the order alternating, so neither
    engine always runs first), and each engine's vectors."""
    best = {name: float("inf") for name in engines}
    vectors: dict[str, np.ndarray] = {}
    for r in range(repeats):
        for name in list(engines)[:: 1 if r % 2 == 0 else -1]:
            with Timer() as t:
                vectors[name] = engines[name](texts)
            best[name] = min(best[name], t.s)
    return best, vectors


def throughput(args: argparse.Namespace) -> dict:
    ours = Encoder(args.encoder, args.max_length, device="cpu")
    st = sentence_transformer(args.encoder, args.max_length)
    engines = {
        "kard": lambda texts: ours.encode(texts, args.batch_size),
        "sentence_transformers": lambda texts: st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                                         convert_to_numpy=True, show_progress_bar=False),
    }
    texts, _ = corpus(args.corpus, args.passages, 0, args.encoder)
    best_of(engines, texts[: 2 * args.batch_size], 1)  # warm-up: allocator, kernels, tokenizer caches
    best, vectors = best_of(engines, texts, args.repeats)
    rate = {name: round(len(texts) / s, 1) for name, s in best.items()}
    return {"passages": len(texts), "passages_per_s": rate,
            "ratio_kard_over_st": round(rate["kard"] / rate["sentence_transformers"], 3),
            "max_abs_diff": float(np.abs(vectors["kard"] - vectors["sentence_transformers"]).max())}


def _recall(got: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    return round(float(np.mean([len(set(g[:k]) & set(e[:k])) / k for g, e in zip(got, exact)])), 4)


def _passage_store(texts: list[str], path: str) -> None:
    """The passages as a one-shard passage store (kept when a work folder already holds it)."""
    import pyarrow as pa

    from kard_ray.retrieval.passages import PassageStore, write_passage_store

    if os.path.isdir(path):
        if len(PassageStore(path)) != len(texts):
            raise SystemExit(f"{path} holds another number of passages: use another --work-dir")
        return
    os.makedirs(path)
    write_passage_store(pa.table({"pid": [f"p{i}" for i in range(len(texts))], "text": texts}),
                        os.path.join(path, "shard-00000.arrow"))


@contextlib.contextmanager
def _work_dir(path: str | None) -> Iterator[str]:
    """``--work-dir`` (kept, so a killed run resumes its embedding from the parts written), else a temporary one."""
    if path:
        os.makedirs(path, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="kard-encode-") as tmp:
        yield tmp


def _resumed_rows(n: int, cfg: DenseConfig, out_dir: str) -> int:
    """Rows whose part a killed earlier run already wrote (this run does not encode them)."""
    parts = os.path.join(out_dir, "parts")
    done = set(os.listdir(parts)) if os.path.isdir(parts) else set()
    return sum(end - start for start, end in part_ranges(n, cfg) if part_name(start) in done)


def _timed_index(embeddings: np.ndarray, cfg: DenseConfig, out_dir: str) -> tuple[dict, float]:
    """An index folder beside the stored vectors (linked, not copied), and its FAISS build + write time
    (from scratch: a resumed run's shards would not be rebuilt)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    os.link(embeddings.filename, os.path.join(out_dir, "embeddings.npy"))
    with Timer() as t:
        meta = write_faiss(embeddings, cfg, out_dir)
    return meta, round(t.s, 2)


SWEEP_BUILDS = [(256, 48), (1024, 48), (256, 96), (1024, 96)]  # (ivf_lists, pq_m): one trained index each
SWEEP_NPROBE = (8, 16, 32, 64, 128)
SWEEP_REFINE = (4, 10, 25)


def sweep(vectors: np.ndarray, q: np.ndarray, exact: np.ndarray, base: DenseConfig, work: str) -> list[dict]:
    """IVF-PQ's recall@10 and search time over lists, sub-quantisers, lists probed and re-rank depth; the
    probe count and the re-rank depth are search-time settings, so each build serves every pair of them."""
    out = []
    for lists, pq_m in SWEEP_BUILDS:
        meta, build_s = _timed_index(vectors, base.model_copy(update={"index": "ivfpq", "ivf_lists": lists,
                                                                      "pq_m": pq_m, "refine": 1}), f"{work}/sweep")
        index = DenseIndex(f"{work}/sweep", encoder=object())
        for nprobe in SWEEP_NPROBE:
            for _, shard in index.shards:
                shard.nprobe = nprobe
            for refine in SWEEP_REFINE:
                index.refine = refine
                with Timer() as t:
                    got = [r for r, _ in index.search_vectors(q, 10)]
                out.append({"ivf_lists": lists, "pq_m": pq_m, "nprobe": nprobe, "refine": refine,
                            "index_bytes": meta["index_bytes"], "build_s": build_s,
                            "ms_per_query": round(1000 * t.s / len(q), 3), "recall_at_10": _recall(got, exact)})
                print(f"sweep: {out[-1]}")
    return out


def ivfpq(args: argparse.Namespace) -> dict:
    """N passages through build_dense_index (Ray), then flat and IVF-PQ from the memory map, recall@10."""
    import ray

    from kard_ray.runtime import init_ray, route_logs_to_file

    texts, draw_queries = corpus(args.corpus, args.ivfpq, 1, args.encoder)
    queries = draw_queries(texts, args.queries, 2)
    base = DenseConfig(encoder=args.encoder, max_length=args.max_length, batch_size=args.batch_size)
    with _work_dir(args.work_dir) as work, PeakMemory(interval_s=2.0) as mem:
        route_logs_to_file(f"{work}/logs/ray.log")
        init_ray(log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # its progress lines would drown the result
        _passage_store(texts, f"{work}/passages.arrow")
        resumed = _resumed_rows(len(texts), base, f"{work}/built")
        with Timer() as t_embed:
            build_dense_index(f"{work}/passages.arrow", len(texts), base, f"{work}/built")
        vectors = np.load(f"{work}/built/embeddings.npy", mmap_mode="r")
        flat_meta, flat_s = _timed_index(vectors, base.model_copy(update={"index": "flat"}), f"{work}/flat")
        pq_meta, pq_s = _timed_index(vectors, base.model_copy(update={"index": "ivfpq"}), f"{work}/ivfpq")
        sh_meta, sh_s = _timed_index(vectors, base.model_copy(update={"index": "ivfpq", "shard_rows": args.shard_rows}),
                                     f"{work}/ivfpq_sharded")
        q = Encoder(args.encoder, args.max_length, device="cpu").encode(queries, args.batch_size)
        flat, pq, sharded = (DenseIndex(f"{work}/{name}", encoder=object())
                             for name in ("flat", "ivfpq", "ivfpq_sharded"))
        with Timer() as t_flat:
            exact = np.stack([r for r, _ in flat.search_vectors(q, 10)])
        with Timer() as t_pq:
            refined = [r for r, _ in pq.search_vectors(q, 10)]
        with Timer() as t_sh:
            refined_sharded = [r for r, _ in sharded.search_vectors(q, 10)]
        compressed = pq.candidates(q, 10)[1]  # the PQ codes' own ranking, no exact re-rank
        grid = sweep(vectors, q, exact, base, work) if args.sweep else []
    return {"passages": len(texts), "queries": len(queries), "resumed_rows": resumed,
            "ray_embed_s": round(t_embed.s, 1), "ray_passages_per_s": round((len(texts) - resumed) / t_embed.s, 1),
            "peak_pss_mb": round(mem.peak_mb),
            "index": {"flat": _summary(flat_meta, flat_s, t_flat.s, len(queries)),
                      "ivfpq": _summary(pq_meta, pq_s, t_pq.s, len(queries)),
                      "ivfpq_sharded": {**_summary(sh_meta, sh_s, t_sh.s, len(queries)),
                                        "shards": len(sh_meta["shards"]),
                                        "largest_shard_bytes": max(s["bytes"] for s in sh_meta["shards"])}},
            "ivfpq_config": {"ivf_lists": base.ivf_lists, "nprobe": base.nprobe, "pq_m": base.pq_m,
                             "refine": pq_meta["refine"]},
            "recall_at_10": {"ivfpq_refined": _recall(refined, exact), "ivfpq_codes_only": _recall(compressed, exact),
                             "ivfpq_sharded_refined": _recall(refined_sharded, exact)},
            "sharded_agrees_with_one_index": _recall(refined_sharded, np.stack(refined)),
            **({"sweep": grid} if grid else {})}


def _summary(meta: dict, build_s: float, search_s: float, n_queries: int) -> dict:
    return {"kind": meta["index"], "index_bytes": meta["index_bytes"], "build_s": build_s,
            "ms_per_query": round(1000 * search_s / n_queries, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=4000, help="throughput: passages per pass (0: skip)")
    ap.add_argument("--corpus", choices=("text", "words"), default="text",
                    help="text: real prose (installed packages' docstrings and botocore's service docs, "
                         "benchmarks/text_corpus.py); words: random English words, no topics")
    ap.add_argument("--encoder", default=DenseConfig().encoder)
    ap.add_argument("--batch-size", type=int, default=DenseConfig().batch_size)
    ap.add_argument("--max-length", type=int, default=DenseConfig().max_length)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for both engines")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ivfpq", type=int, default=0, metavar="N", help="also index N passages (0: skip)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--shard-rows", type=int, default=25_000,
                    help="--ivfpq: also a sharded IVF-PQ index of this many rows per shard")
    ap.add_argument("--sweep", action="store_true",
                    help="--ivfpq: also recall and search time over a grid of IVF-PQ settings")
    ap.add_argument("--work-dir", help="--ivfpq's folder, kept: rerun after a kill to resume the embedding")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    machine = cpu_info()
    print(f"cpu: {machine['cpu']} ({machine['cores']} cores, {' '.join(machine['vector_flags'])})")
    result: dict = {"benchmark": "encode", **machine, "corpus": args.corpus,
                    **({"corpus_sources": sources()} if args.corpus == "text" else {}), "encoder": args.encoder,
                    "batch_size": args.batch_size, "max_length": args.max_length, "threads": args.threads}
    if args.passages:
        result["throughput"] = tp = throughput(args)
        print(f"passages/s  kard {tp['passages_per_s']['kard']}  sentence-transformers "
              f"{tp['passages_per_s']['sentence_transformers']}  ratio {tp['ratio_kard_over_st']}  "
              f"max |diff| {tp['max_abs_diff']:.2e}")
    if args.ivfpq:
        result["ivfpq"] = ivfpq(args)
        print(f"ivfpq: {result['ivfpq']}")
    emit(result)


if __name__ == "__main__":
    main()
