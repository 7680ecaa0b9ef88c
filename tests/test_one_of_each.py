"""Issue #14 "one of each": option rendering, mean pooling, fact recall and folder document ids each
exist once, and every caller gets the same answer from them (no Ray, no model download)."""

import math

import pytest
import torch

from kard_ray.config import TeacherConfig
from kard_ray.data.kb_sources import folder_doc_id, load_documents
from kard_ray.data.records import ReadReport
from kard_ray.data.schema import Question, render_options
from kard_ray.evaluation.metrics import hit_rate, recall_at
from kard_ray.kb.ingest import expand_sources, source_documents
from kard_ray.reranker.evaluate import recall
from kard_ray.reranker.model import query_text
from kard_ray.retrieval.dense import mean_pool
from kard_ray.student.formats import render
from kard_ray.teacher.prompts import render_prompt

OPTIONS = ["water", "rock"]


def test_every_reader_sees_the_options_rendered_one_way():
    assert render_options(OPTIONS) == "(A) water (B) rock"
    assert query_text("Where do fish live?", OPTIONS) == "Where do fish live? (A) water (B) rock"
    assert query_text("Where do fish live?", OPTIONS, with_options=False) == "Where do fish live?"
    assert render_options(OPTIONS) in render("ft", "Where do fish live?", OPTIONS)
    q = Question(id="q", question="Where do fish live?", options=OPTIONS, answer=0)
    assert render_options(OPTIONS, "\n") in render_prompt(q, TeacherConfig())


def test_mean_pool_ignores_padding_and_is_unit_length():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    pooled = mean_pool(hidden, torch.tensor([[1, 1, 0]]))
    assert torch.allclose(pooled, torch.tensor([[2.0, 2.0]]) / math.sqrt(8.0))


def test_fact_recall_is_one_computation_with_each_callers_empty_value():
    assert hit_rate([True, False, True]) == pytest.approx(0.6667)
    assert hit_rate([]) is None and math.isnan(recall([]))
    assert recall([[True, False], [True]]) == hit_rate([True, False, True])
    facts, texts = [["fish live in water"], []], [["Fish live in water.", "x"], ["y"]]
    assert recall_at(facts, texts, [1, 2]) == {"recall@1": 1.0, "recall@2": 1.0}


def _two_a_txt(tmp_path):
    kb = tmp_path / "kb"
    for sub, text in (("x", "Fish live in water."), ("y", "Rocks are hard.")):
        (kb / sub).mkdir(parents=True)
        (kb / sub / "a.txt").write_text(text)
    (kb / "notes.md").write_text("# Notes\nPlants need light.")
    return kb


def test_folder_doc_id_is_the_relative_path():
    assert folder_doc_id("/kb", "/kb/x/a.txt") == "x/a.txt" == folder_doc_id("/kb/", "/kb/x/a.txt")
    assert folder_doc_id("bucket/kb", "bucket/kb/y/a.txt") == "y/a.txt"
    with pytest.raises(ValueError):
        folder_doc_id("/kb", "/other/a.txt")


def test_same_named_files_get_distinct_ids_in_check_and_build(tmp_path):
    """``kard data check --kb`` (load_documents) and ``kard kb build`` (expand_sources + source_documents,
    the part of the build before chunking) give a folder's files the same unique documents."""
    kb = _two_a_txt(tmp_path)
    checked, _ = load_documents(str(kb))
    sources = expand_sources([str(kb)], "auto")
    built = [{"doc_id": d, "title": t, "text": x} for s in sources
             for d, t, x in source_documents(s["path"], s["format"], s["doc_id"], "error", ReadReport(s["path"]))]
    expected = [("notes.md", "Notes"), ("x/a.txt", "a"), ("y/a.txt", "a")]
    assert [(d.id, d.title) for d in checked] == expected
    assert [(r["doc_id"], r["title"]) for r in built] == expected
    assert [r["text"] for r in built] == [d.text for d in checked]
