"""The streaming kb and index stages: exact dedupe across files and parts, ids independent of part and shard
sizes, and builds killed midway that resume without redoing finished work."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from kard_ray.artifacts import RunDir
from kard_ray.config import load_config
from kard_ray.kb.chunking import chunk_text
from kard_ray.pipeline import run_one
from kard_ray.retrieval.bm25 import BM25Index
from kard_ray.run_readers import open_passages

pytestmark = pytest.mark.ray


def quiet(_msg):
    pass


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))


def kb_run(root, name, paths, *sets):
    cfg = load_config(None, [f"run_dir={root}/{name}", f"kb.paths={json.dumps([str(p) for p in paths])}", *sets])
    return cfg, RunDir(cfg.run_dir)


def reference_passages(files, cfg):
    """What the KB must hold: every chunk in (file, document, chunk) order, the first of each text kept."""
    seen, out = set(), []
    for f in files:
        for line in f.read_text().splitlines():
            doc = json.loads(line)
            for c, text in enumerate(chunk_text(doc["text"], cfg.kb.chunking)):
                if text not in seen:
                    seen.add(text)
                    out.append((f"{doc['id']}#{c}", text))
    return out


@pytest.fixture
def duplicated_kb(tmp_path):
    """Three files whose paragraphs repeat within a document, across documents and across files."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    pool = [" ".join(rng.choice(words, 6)) + "." for _ in range(30)]
    files = []
    for f in range(3):
        docs = [(f"f{f}d{d}", "\n\n".join(rng.choice(pool, 4))) for d in range(12)]
        files.append(tmp_path / f"kb{f}.jsonl")
        write_jsonl(files[-1], docs)
    return files


def test_dedupe_is_exact_across_files_and_parts(ray_session, tmp_path, duplicated_kb):
    cfg, run = kb_run(tmp_path, "run", duplicated_kb, "kb.part_rows=5")
    m = run_one("kb", cfg, run, log=quiet)
    expected = reference_passages(duplicated_kb, cfg)
    table = pq.read_table(run.path("kb/passages.parquet"))
    assert list(zip(table["pid"].to_pylist(), table["text"].to_pylist())) == expected
    assert m["counts"]["chunks"] == 3 * 12 * 4 and m["counts"]["passages"] == len(expected) <= 30
    assert m["counts"]["duplicates_dropped"] == m["counts"]["chunks"] - len(expected)
    assert m["counts"]["parts"] > 3  # several parts per file: dedupe crossed parts and files
    store = open_passages(run.uri)
    assert len(store) == len(expected) and store.pids(range(len(expected))) == [p for p, _ in expected]
    assert not run.exists("kb", "_staging") and not run.exists("kb", "_work_key")


def test_rows_and_pids_do_not_depend_on_part_or_shard_sizes(ray_session, tmp_path, duplicated_kb):
    small, run_a = kb_run(tmp_path, "a", duplicated_kb, "kb.part_rows=3", "retrieval.bm25.shard_rows=4")
    large, run_b = kb_run(tmp_path, "b", duplicated_kb, "kb.part_rows=100000")
    for cfg, run in ((small, run_a), (large, run_b)):
        run_one("kb", cfg, run, log=quiet)
        run_one("index", cfg, run, log=quiet)
    assert pq.read_table(run_a.path("kb/passages.parquet")).equals(pq.read_table(run_b.path("kb/passages.parquet")))
    a, b = BM25Index(run_a.path("index/bm25")), BM25Index(run_b.path("index/bm25"))
    assert len(a.shards) > 1 and len(b.shards) == 1
    for q in ("w1 w2 w3", "w7 w30", "w11"):
        (ra, sa), (rb, sb) = a.search(q, 8), b.search(q, 8)
        assert ra.tolist() == rb.tolist() and np.allclose(sa, sb, rtol=0, atol=1e-12)


def test_repeated_document_ids_are_named(ray_session, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    write_jsonl(one, [("same", "The first text.")])
    write_jsonl(two, [("same", "A different text.")])
    cfg, run = kb_run(tmp_path, "run", [one, two])
    with pytest.raises(ValueError, match="document ids repeat .* same#0"):
        run_one("kb", cfg, run, log=quiet)
    write_jsonl(two, [("same", "The first text.")])  # same id, same text: a duplicate, dropped
    cfg, run = kb_run(tmp_path, "run2", [one, two])
    assert run_one("kb", cfg, run, log=quiet)["counts"]["passages"] == 1


def kill_when(args: list[str], ready, log_path, timeout_s: float = 300) -> None:
    """Run ``args`` (its own embedded Ray), SIGKILL its process group once ``ready()`` holds."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)
        deadline = time.time() + timeout_s
        try:
            while time.time() < deadline and proc.poll() is None and not ready():
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_killed_kb_and_index_builds_resume(ray_session, tmp_path):
    rng = np.random.default_rng(0)
    words = np.array([f"term{i}" for i in range(5000)])
    files = []
    for f in range(8):
        files.append(tmp_path / f"kb{f}.jsonl")
        write_jsonl(files[-1], [(f"f{f}-{d}", " ".join(words[rng.integers(0, 5000, 30)]))
                                for d in range(15_000)])
    sets = ["kb.part_rows=5000", "retrieval.bm25.shard_rows=10000", "ray.num_cpus=2"]
    cfg, run = kb_run(tmp_path, "run", files, *sets)
    cli = [sys.executable, "-m", "kard_ray.cli", "index", "--run-dir", cfg.run_dir,
           "--set", f"kb.paths={json.dumps([str(p) for p in files])}", *[a for s in sets for a in ("--set", s)]]
    staging = tmp_path / "run" / "kb" / "_staging"

    kill_when(cli, lambda: len(list(staging.glob("file-*.json"))) >= 2, tmp_path / "kb.log")
    done_before = list(staging.glob("file-*.json"))
    assert 2 <= len(done_before) < 8 and not run.is_done("kb"), (tmp_path / "kb.log").read_text()[-3000:]
    m = run_one("kb", cfg, run, log=quiet)  # resumes: finished files are neither read nor written again
    assert m["counts"]["passages"] == 8 * 15_000 and m["counts"]["parts"] == 8 * 3
    # at least the files finished before the kill; Ray workers outliving the killed driver may finish one more
    assert len(done_before) <= m["counts"]["files_resumed"] < 8
    fresh_cfg, fresh = kb_run(tmp_path, "fresh", files, *sets)
    run_one("kb", fresh_cfg, fresh, log=quiet)
    assert pq.read_table(run.path("kb/passages.parquet")).equals(pq.read_table(fresh.path("kb/passages.parquet")))

    counts = tmp_path / "run" / "index" / "bm25" / "_counts"
    kill_when(cli, lambda: len(list(counts.glob("shard-*/vocab.json"))) >= 2, tmp_path / "index.log")
    counted = {p.parent.name: p.stat().st_mtime_ns for p in counts.glob("shard-*/vocab.json")}
    assert 2 <= len(counted) < 12 and not run.is_done("index"), (tmp_path / "index.log").read_text()[-3000:]
    for shard, t in counted.items():  # still there, untouched, until the resumed build uses them
        assert (counts / shard / "vocab.json").stat().st_mtime_ns == t
    m = run_one("index", cfg, run, log=quiet)
    assert m["counts"]["bm25_shards"] == 12 and m["counts"]["bm25_shards_resumed"] >= len(counted)
    assert not counts.exists()
    run_one("index", fresh_cfg, fresh, log=quiet)
    a, b = BM25Index(run.path("index/bm25")), BM25Index(fresh.path("index/bm25"))
    for q in ("term1 term2 term3", "term4999 term17", "term250"):
        (ra, sa), (rb, sb) = a.search(q, 10), b.search(q, 10)
        assert ra.tolist() == rb.tolist() and np.array_equal(sa, sb)
