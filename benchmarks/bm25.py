"""BM25 benchmark: this project's engine against rank_bm25 (the reference) and bm25s (the peer).

    python benchmarks/bm25.py --passages 100000 --queries 500
    python benchmarks/bm25.py --passages 10000000 --queries 1000 --pipeline   # KB -> kb + index stages -> queries

All engines get the same corpus, the same token lists (this project's tokenizer) and the same
k1/b; every timing is single-process, single-thread, top-10. rank_bm25 scores every document
per query in Python, so it runs on a sample of the queries. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    PeakMemory,
    Timer,
    cpu_info,
    emit,
    synthetic_passages,
    synthetic_queries,
    tree_pss_mb,
    write_synthetic_kb,
)

from kard_ray.retrieval.bm25 import BM25Index, BM25Params, build_bm25_index  # noqa: E402
from kard_ray.retrieval.tokenizer import Tokenizer  # noqa: E402


def load_kb(path: str) -> list[str]:
    from kard_ray.data import load_documents

    docs, _ = load_documents(path)
    return [d.text for d in docs]


ROUNDS = 3  # every throughput is the best of this many passes (this box is shared: the best pass is the machine)


def best_qps(run_all, n: int) -> float:
    """Queries per second of ``run_all()`` (which answers n queries), best of ROUNDS passes."""
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run_all()
        best = min(best, time.perf_counter() - t0)
    return n / best


def time_queries(search, queries: list[str]) -> float:
    t0 = time.perf_counter()
    for q in queries:
        search(q)
    return len(queries) / (time.perf_counter() - t0)


def agreement(index: BM25Index, ref, tokenizer: Tokenizer, queries: list[str], k: int = 10) -> float:
    """Share of our top-k that are true top-k under rank_bm25 (ties at the k-th score count as agreement)."""
    good = total = 0
    for q in queries:
        ref_scores = ref.get_scores(tokenizer(q))
        rows, _ = index.search(q, k)
        kth = np.sort(ref_scores)[::-1][min(k, len(ref_scores)) - 1]
        good += int(sum(ref_scores[r] >= kth - 1e-9 for r in rows))
        total += len(rows)
    return good / max(total, 1)


def rank_bm25_reference(index: BM25Index, tokens: list[list[str]], queries: list[str], tok: Tokenizer,
                        params: BM25Params, n_queries: int | None) -> dict:
    """rank_bm25 (the correctness reference) on a sample of the queries: its speed and our top-10 agreement."""
    from rank_bm25 import BM25Okapi

    with Timer() as t_ref:
        ref = BM25Okapi(tokens, k1=params.k1, b=params.b, epsilon=params.epsilon)
    per_query = 2e-6 * len(tokens) + 1e-3  # rough: rank_bm25 costs O(N) per query term
    sample = queries[: n_queries or max(5, min(len(queries), int(30 / (per_query * 6))))]
    return {"rank_bm25_build_s": round(t_ref.s, 2), "rank_bm25_queries": len(sample),
            "rank_bm25_qps": round(time_queries(lambda q: ref.get_scores(tok(q)), sample), 3),
            "top10_agreement": round(agreement(index, ref, tok, sample), 4)}


def bm25s_peer(tokens: list[list[str]], qtoks: list[list[str]], params: BM25Params,
               backends: tuple[str, ...] = ("numba", "numpy")) -> dict:
    """bm25s with each of its backends (numba: its fastest), one thread, warmed; bm25s_qps = the best."""
    import bm25s

    out: dict = {}
    for backend in backends:
        try:
            peer = bm25s.BM25(k1=params.k1, b=params.b, method="robertson", backend=backend)
            with Timer() as t_build:
                peer.index(tokens, show_progress=False)
            peer.retrieve(qtoks[:2], k=10, show_progress=False, n_threads=0)  # JIT compile outside the clock
        except ImportError as exc:
            out[f"bm25s_{backend}_error"] = str(exc)
            continue
        retrieve = functools.partial(peer.retrieve, qtoks, k=10, show_progress=False, n_threads=0)
        out[f"bm25s_{backend}_qps"] = round(best_qps(retrieve, len(qtoks)), 1)
        out[f"bm25s_{backend}_build_s"] = round(t_build.s, 2)
        del peer, retrieve
    best = max((b for b in backends if f"bm25s_{b}_qps" in out), key=lambda b: out[f"bm25s_{b}_qps"])
    out["bm25s_backend"], out["bm25s_qps"] = best, out[f"bm25s_{best}_qps"]
    return out


def driver_rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``RssAnon``: its heap alone, without memory-mapped file pages), MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 1024


class PeakDriverRSS(PeakMemory):
    """Peak RSS of this process alone: the driver, which must stay flat in the KB's size."""

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, driver_rss_mb())
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_pipeline(n: int, n_queries: int, tmp: str, files_of: int = 250_000) -> dict:
    """The real kb + index stages over an n-passage JSONL KB written by Ray tasks (not held here), then
    queries against the memory-mapped result. Times and memory of the stages only (generation apart)."""
    import ray

    from kard_ray.artifacts import RunDir
    from kard_ray.config import load_config
    from kard_ray.pipeline import run_one
    from kard_ray.retrieval.passages import PassageStore
    from kard_ray.runtime import init_ray

    kb_dir = os.path.join(tmp, "kb")
    os.makedirs(kb_dir)
    sizes = [min(files_of, n - s) for s in range(0, n, files_of)]
    cfg = load_config(None, [f"run_dir={tmp}/run", f"kb.paths=[{kb_dir}]", "ray.object_store_memory_mb=2048"])
    init_ray(cfg.ray)
    out: dict = {"kb_files": len(sizes), "ray_cpus": ray.cluster_resources().get("CPU")}
    with Timer() as t_gen:
        gen = ray.remote(write_synthetic_kb)
        ray.get([gen.remote(os.path.join(kb_dir, f"part-{i:04d}.jsonl"), m, i) for i, m in enumerate(sizes)])
    out["generate_s"] = round(t_gen.s, 1)
    run = RunDir(cfg.run_dir)
    with PeakMemory() as tree, PeakDriverRSS() as driver:
        for stage in ("kb", "index"):
            with Timer() as t:
                m = run_one(stage, cfg, run, log=lambda _m: None)
            out[f"{stage}_s"] = round(t.s, 1)
            out.update({f"{stage}_{k}": v for k, v in m["counts"].items() if isinstance(v, int)})
    out["stages_s"] = round(out["kb_s"] + out["index_s"], 1)
    out["peak_pss_mb"], out["driver_peak_rss_mb"] = round(tree.peak_mb, 1), round(driver.peak_mb, 1)
    print(json.dumps(out), file=sys.stderr, flush=True)  # the build's figures, whatever the queries do
    ray.shutdown()  # queries below run in this process alone, as a server would
    store = PassageStore(run.path("kb", "passages.arrow"))
    sample = np.random.default_rng(2).integers(0, len(store), size=n_queries)
    queries = synthetic_queries(store.texts(sample.tolist()), n_queries)
    del store
    rss_before = driver_rss_mb()
    index = BM25Index(run.path("index", "bm25"))
    index.search_many(queries[:2], 10)
    out["qps"] = round(best_qps(lambda: index.search_many(queries, 10), len(queries)), 1)
    out["query_rss_mb"] = round(driver_rss_mb(), 1)  # mostly mapped index pages: the OS's page cache
    out["query_rss_anon_mb"] = round(driver_rss_mb("RssAnon"), 1)
    out["query_rss_added_mb"] = round(out["query_rss_mb"] - rss_before, 1)
    out["index_disk_mb"] = round(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                                     os.walk(run.path("index", "bm25")) for f in fs) / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--kb", help="a KB file instead of synthetic passages")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--pipeline", action="store_true",
                    help="generate a JSONL KB with Ray tasks, build it through the real kb + index stages, query it")
    ap.add_argument("--tmp", default=None, help="--pipeline: where the KB and run dir go (needs ~2.5 GB per 1M)")
    ap.add_argument("--rank-bm25-queries", type=int, default=None,
                    help="queries for rank_bm25 (default: enough for ~30 s of its time)")
    ap.add_argument("--no-peers", action="store_true", help="skip rank_bm25 and bm25s")
    ap.add_argument("--no-rank-bm25", action="store_true", help="skip rank_bm25 (its O(N) Python loop at 1M)")
    ap.add_argument("--bm25s-backends", default="numba,numpy", help="bm25s backends to time (best one is reported)")
    args = ap.parse_args()

    if args.pipeline:  # the corpus never enters this process: written by Ray tasks, read by the stages
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            emit({"passages": args.passages, "queries": args.queries, "cpu": cpu_info(),
                  **run_pipeline(args.passages, args.queries, tmp)})
        return
    passages = load_kb(args.kb) if args.kb else synthetic_passages(args.passages)
    queries = synthetic_queries(passages, args.queries)
    tok = Tokenizer()
    params = BM25Params()
    result: dict = {"passages": len(passages), "queries": len(queries), "shards": args.shards, "cpu": cpu_info()}

    with PeakMemory() as mem, tempfile.TemporaryDirectory() as tmp:
        with Timer() as t_build:
            out = os.path.join(tmp, "bm25")
            build_bm25_index(lambda a, b: passages[a:b], len(passages), out, tok, params, shards=args.shards)
        index = BM25Index(out)
        result["build_s"] = round(t_build.s, 2)
        result["kernel"] = "numba" if index.compiled else "numpy"
        index.search_many(queries[:2], 10)  # warm: JIT (cached on disk) and the index's pages
        result["qps"] = round(best_qps(lambda: index.search_many(queries, 10), len(queries)), 1)  # as bm25s
        result["qps_one_by_one"] = round(best_qps(lambda: [index.search(q, 10) for q in queries], len(queries)), 1)
        if index.compiled:
            plain = BM25Index(out, kernel="numpy")
            result["qps_numpy_kernel"] = round(
                best_qps(lambda: [plain.search(q, 10) for q in queries], len(queries)), 1)
        result["pss_mb_at_query"] = round(tree_pss_mb(), 1)  # this process holds the corpus too

        if not args.no_peers:
            tokens = [tok(p) for p in passages]
            if not args.no_rank_bm25:
                result.update(rank_bm25_reference(index, tokens, queries, tok, params, args.rank_bm25_queries))
                result["speedup"] = round(result["qps"] / result["rank_bm25_qps"], 1)
            result.update(bm25s_peer(tokens, [tok(q) or ["<empty>"] for q in queries], params,
                                     tuple(args.bm25s_backends.split(","))))
            result["vs_bm25s"] = round(result["qps"] / result["bm25s_qps"], 2)
    result["peak_rss_mb"] = round(mem.peak_mb, 1)
    emit(result)


if __name__ == "__main__":
    main()
