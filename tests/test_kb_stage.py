"""The kb and index stages on a real (session) Ray: chunking, bad inputs, batch retrieval, dense, hybrid."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from kard_ray.artifacts import RunDir
from kard_ray.config import load_config
from kard_ray.data import MalformedRecord
from kard_ray.data.text import contains_fact
from kard_ray.pipeline import run_one
from kard_ray.run_readers import open_passages, open_retriever

pytestmark = pytest.mark.ray


def quiet(_msg):
    pass


def kb_run(tmp_path, paths, *sets):
    cfg = load_config(None, [f"run_dir={tmp_path}/run", f"kb.paths={json.dumps([str(p) for p in paths])}", *sets])
    return cfg, RunDir(cfg.run_dir)


def test_world_kb_index_and_batch_retrieval(ray_session, tmp_path, tiny_world):
    import ray

    from kard_ray.data import load_questions
    from kard_ray.retrieval.batch import retrieve_dataset
    from kard_ray.run_readers import index_uris, passages_uri

    cfg, run = kb_run(tmp_path, [tiny_world / "kb.jsonl"], "retrieval.bm25.shards=2")
    m = run_one("kb", cfg, run, log=quiet)
    table = pq.read_table(run.path("kb/passages.parquet"))
    assert table.column_names == ["pid", "doc_id", "title", "text"]
    assert m["counts"]["passages"] == table.num_rows and len(set(table["pid"].to_pylist())) == table.num_rows
    im = run_one("index", cfg, run, log=quiet)
    assert im["counts"]["bm25_shards"] == 2
    qs, _ = load_questions(str(tiny_world / "test.jsonl"))
    texts = table["text"].to_pylist()
    assert all(any(contains_fact(t, f) for t in texts) for q in qs for f in q.facts)

    ds = ray.data.from_items([{"qid": q.id, "query": " ".join(q.facts)} for q in qs])
    out = retrieve_dataset(ds, index_uris(run.uri), passages_uri(run.uri), cfg.retrieval, k=3).take_all()
    retriever, store = open_retriever(run.uri, cfg.retrieval), open_passages(run.uri)
    for row in out:
        rows, scores = retriever.search(row["query"], 3)
        assert list(row["rows"]) == rows.tolist() and np.allclose(row["scores"], scores)
        assert list(row["pids"]) == store.pids(rows)
    # rationale-style queries (the gold facts) find their facts: the premise of KARD's training
    facts = {q.id: q.facts for q in qs}
    hits = [any(contains_fact(t, f) for t in store.texts(r["rows"])) for r in out for f in facts[r["qid"]]]
    assert np.mean(hits) > 0.95


def test_rerun_skips_and_duplicates_are_dropped(ray_session, tmp_path):
    kb = tmp_path / "kb.txt"
    kb.write_text("Fact one.\nFact two.\n  Fact   one. \n\n")
    cfg, run = kb_run(tmp_path, [kb])
    m = run_one("kb", cfg, run, log=quiet)
    assert m["counts"]["chunks"] == 3 and m["counts"]["duplicates_dropped"] == 1
    assert open_passages(run.uri).texts([0, 1]) == ["Fact one.", "Fact two."]
    assert run_one("kb", cfg, run, log=quiet)["started_at"] == m["started_at"]


def test_bad_inputs(ray_session, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    cfg, run = kb_run(tmp_path, [empty])
    with pytest.raises(ValueError, match="no non-empty passages"):
        run_one("kb", cfg, run, log=quiet)
    assert not run.is_done("kb")

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_text("A good document.")
    (folder / "blank.md").write_text("   ")
    (folder / "latin.txt").write_bytes(b"caf\xe9 au lait")
    cfg, run = kb_run(tmp_path, [folder])
    with pytest.raises(MalformedRecord, match=r"latin.txt:1: not valid UTF-8"):
        run_one("kb", cfg, run, log=quiet)

    bad = tmp_path / "kb.jsonl"
    bad.write_text('{"id": "a", "text": "Alpha."}\n{broken\n{"id": "c", "text": ""}\n')
    cfg, run = kb_run(tmp_path, [bad], "kb.on_malformed=skip")
    m = run_one("kb", cfg, run, log=quiet)
    assert m["counts"]["passages"] == 1 and m["counts"]["documents_skipped"] == 2
    assert any("kb.jsonl:2" in e for e in m["extra"]["skipped_examples"])


def test_same_named_files_in_subfolders_are_distinct_documents(ray_session, tmp_path):
    folder = tmp_path / "docs"
    for sub, text in (("x", "Fish live in water."), ("y", "Rocks are hard.")):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "a.txt").write_text(text)
    cfg, run = kb_run(tmp_path, [folder])
    run_one("kb", cfg, run, log=quiet)
    table = pq.read_table(run.path("kb/passages.parquet"))
    assert table["doc_id"].to_pylist() == ["x/a.txt", "y/a.txt"]


def test_ten_megabyte_document(ray_session, tmp_path):
    big = tmp_path / "big.jsonl"
    body = " ".join(f"Sentence number {i} talks about topic {i % 97}." for i in range(250_000))
    big.write_text(json.dumps({"id": "big", "text": body}) + "\n")
    assert big.stat().st_size > 10_000_000
    cfg, run = kb_run(tmp_path, [big], "kb.chunking.strategy=sentences", "kb.chunking.sentences_per_chunk=4")
    m = run_one("kb", cfg, run, log=quiet)
    assert m["counts"]["documents"] == 1 and m["counts"]["passages"] == 250_000 // 4


def test_dense_and_hybrid(ray_session, tmp_path):
    kb = tmp_path / "kb.txt"
    kb.write_text("Plants need sunlight to grow.\nThe moon orbits the earth.\nIron rusts when wet.\n"
                  "Fish breathe through gills.\n")
    cfg, run = kb_run(tmp_path, [kb], "retrieval.method=hybrid")
    run_one("kb", cfg, run, log=quiet)
    m = run_one("index", cfg, run, log=quiet)
    assert m["counts"]["dense_vectors"] == 4
    dense = open_retriever(run.uri, cfg.retrieval, "dense")
    rows, scores = dense.search("What do vegetables require to develop?", 2)
    assert rows[0] == 0 and scores[0] > scores[1]  # no shared words: only the dense model can find it
    hybrid = open_retriever(run.uri, cfg.retrieval, "hybrid")
    assert hybrid.search("orbits moon", 1)[0].tolist() == [1]


def test_folder_of_jsonl_files_is_read_file_by_file(ray_session, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(3):
        (folder / f"part-{i}.jsonl").write_text("".join(json.dumps({"id": f"d{i}-{j}", "text": f"Doc {i} {j}."}) + "\n"
                                                        for j in range(4)))
    cfg, run = kb_run(tmp_path, [folder])
    m = run_one("kb", cfg, run, log=quiet)
    assert m["counts"]["files"] == 3 and m["counts"]["passages"] == 12
    assert open_passages(run.uri).pids([0, 11]) == ["d0-0#0", "d2-3#0"]
