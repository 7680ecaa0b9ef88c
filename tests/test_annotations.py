"""Annotation rationales (teacher.source: annotations), the id-hash holdout, the question-facts KB source
and the report's split by facts given: no Ray."""

from __future__ import annotations

import json
import random

import pytest
from conftest import REPO, shared

from kard_ray.answers import parse_answer
from kard_ray.config import ConfigError, TeacherConfig, load_config
from kard_ray.data.questions import from_obqa, from_strategyqa, load_questions
from kard_ray.evaluation import metrics as M
from kard_ray.evaluation.report import report_markdown
from kard_ray.stages.data import fact_documents, hold_out
from kard_ray.student.formats import target_text
from kard_ray.teacher.annotations import annotation_rationale, annotation_rationales

OBQA = {"id": "8-376", "question_stem": "Frilled sharks and angler fish live far beneath the surface of the "
        "ocean, which is why they are known as", "choices": {"text": ["Deep sea animals", "fish", "Long Sea Fish",
        "Far Sea Animals"], "label": ["A", "B", "C", "D"]}, "answerKey": "A",
        "fact1": "deep sea animals live deep in the ocean."}
SQA = {"qid": "q1", "question": "Are more people today related to Genghis Khan than Julius Caesar?",
       "answer": True, "facts": ["Julius Caesar had three children", "Genghis Khan had sixteen children."]}


def test_obqa_rationale_is_the_fact_then_the_answer_and_parses_right():
    q = from_obqa(OBQA)
    text = annotation_rationale(q)
    assert text == "Deep sea animals live deep in the ocean. So the answer is (A) Deep sea animals."
    assert parse_answer(text, q.options).index == 0
    assert target_text("kard", text, q.options, q.answer) == (
        "Deep sea animals live deep in the ocean.\nAnswer: Deep sea animals (A)")


def test_strategyqa_rationale_keeps_every_fact_and_answers_yes_or_no():
    q = from_strategyqa(SQA)
    text = annotation_rationale(q)
    assert text == ("Julius Caesar had three children. Genghis Khan had sixteen children. So the answer is yes.")
    assert parse_answer(text, q.options).index == 0
    no = from_strategyqa({**SQA, "answer": False})
    assert annotation_rationale(no).endswith("So the answer is no.")


def test_questions_without_annotations_are_skipped_and_counted():
    qs = [from_obqa(OBQA), from_obqa({**OBQA, "id": "x", "fact1": ""}), from_strategyqa({**SQA, "facts": []})]
    rows, info = annotation_rationales(qs)
    assert [r["qid"] for r in rows] == ["8-376"]
    assert info["annotated"] == 1 and info["skipped_without_annotations"] == 2
    assert rows[0]["correct"] and rows[0]["cached"] and rows[0]["prompt_tokens"] == 0


def test_teacher_source_and_import_path_agree():
    assert TeacherConfig(import_path="r.jsonl").source == "import"  # `kard rationales --import` sets the path
    with pytest.raises(ValueError, match="import_path is not set"):
        TeacherConfig(source="import")
    with pytest.raises(ValueError, match="unset teacher.import_path"):
        TeacherConfig(source="annotations", import_path="r.jsonl")


def test_holdout_depends_on_ids_only():
    qs = [from_strategyqa({**SQA, "qid": f"q{i}"}) for i in range(50)]
    rest, held = hold_out(qs, 10, seed=0)
    assert len(rest) == 40 and len(held) == 10 and not {q.id for q in rest} & {q.id for q in held}
    shuffled = qs[:]
    random.Random(1).shuffle(shuffled)
    assert {q.id for q in hold_out(shuffled, 10, seed=0)[1]} == {q.id for q in held}  # file order does not matter
    assert {q.id for q in hold_out(qs + [from_strategyqa({**SQA, "qid": "zz"})], 10, 0)[1]} - {"zz"} <= {
        q.id for q in held}  # another question in the file moves at most one place
    assert {q.id for q in hold_out(qs, 10, seed=1)[1]} != {q.id for q in held}
    with pytest.raises(ValueError, match="only 50"):
        hold_out(qs, 50, seed=0)


def test_fact_pool_is_deduplicated_with_stable_ids():
    a = from_strategyqa({**SQA, "facts": ["Genghis Khan had sixteen children.", "X is y"]})
    b = from_strategyqa({**SQA, "qid": "q2", "facts": ["genghis khan had  sixteen children", "Z"]})
    docs = fact_documents([a, b])
    assert [d["text"] for d in docs] == ["Genghis Khan had sixteen children.", "X is y", "Z"]
    assert fact_documents([b, a])[0]["id"] == docs[0]["id"]  # the same fact, the same id, whatever the order


def test_offline_configs_load_and_name_their_teacher():
    for name in ("obqa-offline", "strategyqa-offline"):
        cfg = load_config(str(REPO / "configs" / f"{name}.yaml"), [])
        assert cfg.teacher.source == "annotations" and cfg.data.holdout and cfg.data.limit <= 500
        assert set(cfg.eval.methods) == {"ft", "rd", "kard_bm25", "kard_reranker", "oracle"}
        assert "test" in cfg.teacher.splits  # the oracle row uses the test questions' annotations
    with pytest.raises(ConfigError):
        load_config(str(REPO / "configs" / "obqa-offline.yaml"), ["teacher.source=import"])


def test_accuracy_by_facts_given():
    facts = [["sun is a star"], ["a b", "c d"], ["x y"], []]
    given = [["The sun is a star."], ["a b here"], ["nothing"], ["z"]]
    groups = [M.facts_given(f, g) for f, g in zip(facts, given)]
    assert groups == ["all", "some", "none", None]
    assert M.accuracy_by(groups, [True, False, False, True]) == {
        "all": {"accuracy": 1.0, "n": 1}, "some": {"accuracy": 0.0, "n": 1}, "none": {"accuracy": 0.0, "n": 1}}


def test_report_names_the_source_and_splits_accuracy_by_facts_given():
    method = {"accuracy": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n": 10,
              "by_facts_given": {"all": {"accuracy": 0.8, "n": 5}, "none": {"accuracy": 0.2, "n": 5}}}
    md = report_markdown({"run_dir": "r", "questions": 10, "split": "test", "decoding": "greedy", "passages": 3,
                          "rationales_from": "dataset annotations (human rationales, no LLM)",
                          "methods": {"kard_reranker": method}})
    assert "dataset annotations (human rationales, no LLM)" in md
    assert "| KARD, reranked passages | 80.0 (5) | 20.0 (5) |" in md


@pytest.mark.data
def test_annotation_source_on_the_real_files():
    dev, _ = load_questions(str(shared("obqa/obqa_dev.jsonl")))
    rows, info = annotation_rationales(dev)
    assert info["annotated"] == len(dev) == 500 and all(r["correct"] for r in rows)
    train, _ = load_questions(str(shared("obqa/obqa_train.jsonl")), limit=200)  # this file has no fact1
    assert annotation_rationales(train)[1]["skipped_without_annotations"] == 200
    sqa, _ = load_questions(str(shared("strategyqa/strategyqa_train_split_2061.json")))
    rows, info = annotation_rationales(sqa)
    assert info["annotated"] == len(rows) == 2061 and all(r["correct"] for r in rows)
    assert len({d["id"] for d in fact_documents(sqa)}) == len(fact_documents(sqa))


def test_data_stage_holds_out_and_writes_the_fact_pool(tmp_path):
    from kard_ray.artifacts import RunDir
    from kard_ray.pipeline import run_one
    from kard_ray.stages.data import read_split

    f = tmp_path / "sqa.json"
    f.write_text(json.dumps([{**SQA, "qid": f"q{i}", "facts": [f"fact {i % 7}"]} for i in range(30)]))
    cfg = load_config(None, [f"run_dir={tmp_path}/run", f"data.train={f}", "data.holdout=6"])
    run = RunDir(cfg.run_dir)
    m = run_one("data", cfg, run, log=lambda _m: None)
    assert m["counts"]["train"] == 24 and m["counts"]["test"] == 6 and m["counts"]["annotated_facts"] == 7
    assert len(read_split(run, "test")) == 6
    with_test = load_config(None, [f"run_dir={tmp_path}/run2", f"data.train={f}", f"data.test={f}",
                                   "data.holdout=6"])
    m2 = run_one("data", with_test, RunDir(with_test.run_dir), log=lambda _m: None)
    assert m2["counts"]["train"] == 30  # a given test file turns the holdout off
