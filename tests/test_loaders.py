import json

import pytest
from conftest import shared

from kard_ray.data import MalformedRecord, load_documents, load_questions
from kard_ray.data.text import normalize_for_match

# ---------------------------------------------------------------- real data (skipped when absent)


@pytest.mark.data
def test_obqa_dev_and_train():
    dev, report = load_questions(str(shared("obqa/obqa_dev.jsonl")))
    assert report.format == "obqa" and len(dev) == 500 and report.skipped == 0
    q = dev[0]
    assert len(q.options) == 4 and q.facts and q.answer_text == "Deep sea animals"
    train, _ = load_questions(str(shared("obqa/obqa_train.jsonl")), "obqa")
    assert len(train) == 4957 and all(not q.facts for q in train)


@pytest.mark.data
def test_obqa_facts_are_lines_of_the_open_book():
    book, report = load_documents(str(shared("obqa/openbook.txt")))
    assert len(book) == 1326 and report.format == "text"
    assert not any(d.text.startswith('"') or d.text.endswith('"') for d in book)
    texts = {normalize_for_match(d.text) for d in book}
    dev, _ = load_questions(str(shared("obqa/obqa_dev.jsonl")))
    assert sum(normalize_for_match(q.facts[0]) in texts for q in dev) / len(dev) > 0.95


@pytest.mark.data
def test_strategyqa():
    qs, report = load_questions(str(shared("strategyqa/strategyqa_train_split_2061.json")))
    assert report.format == "strategyqa" and len(qs) == 2061
    assert all(q.options == ["yes", "no"] for q in qs)
    assert qs[0].answer == 0 and len(qs[0].facts) == 3  # "Are more people today related to Genghis Khan..." -> yes


@pytest.mark.data
def test_medqa():
    qs, report = load_questions(str(shared("medqa/medqa_usmle_4options_sample273.jsonl")))
    assert report.format == "medqa" and len(qs) == 273
    assert qs[0].answer_letter == "B" and qs[0].answer_text.startswith("Tell the attending")


# ---------------------------------------------------------------- generic format and bad input


def _write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


def test_generic_jsonl_answer_forms(tmp_path):
    path = _write(tmp_path, "q.jsonl", [
        json.dumps({"id": "a", "question": "2+2?", "options": ["3", "4"], "answer": 1}),
        json.dumps({"id": "b", "question": "Sky?", "options": {"A": "blue", "B": "green"}, "answer": "A"}),
        json.dumps({"id": "c", "question": "Sea?", "options": ["wet", "dry"], "answer": "wet",
                    "rationale": "Water is wet.", "facts": ["water is wet"]}),
    ])
    qs, _ = load_questions(path)
    assert [q.answer for q in qs] == [1, 0, 0]
    assert qs[2].rationale == "Water is wet." and qs[2].facts == ["water is wet"]


def test_generic_csv(tmp_path):
    path = _write(tmp_path, "q.csv", ["id,question,A,B,C,answer", "x,Pick one,red,green,blue,C",
                                      "y,Pick again,cat,dog,,dog"])
    qs, report = load_questions(path)
    assert [q.options for q in qs] == [["red", "green", "blue"], ["cat", "dog"]]
    assert [q.answer for q in qs] == [2, 1] and report.format == "generic"


@pytest.mark.parametrize(
    "bad, reason",
    [
        ('{"question": "x", "options": ["a", "b"], "answer": 1', "invalid JSON"),
        ('{"question": "x", "options": ["a", "b"]}', "answer"),
        ('{"question": "x", "options": ["a", "b"], "answer": 5}', "out of range"),
        ('{"question": "x", "options": ["a", "b"], "answer": "c"}', "exactly one option"),
        ('{"question": "  ", "options": ["a", "b"], "answer": 0}', "blank"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, reason):
    good = json.dumps({"question": "ok?", "options": ["a", "b"], "answer": 0})
    path = _write(tmp_path, "q.jsonl", [good, "", bad, good])
    with pytest.raises(MalformedRecord) as err:
        load_questions(path, "generic")
    assert str(err.value).startswith(f"{path}:3:") and reason in str(err.value)
    qs, report = load_questions(path, "generic", on_malformed="skip")
    assert len(qs) == 2 and report.skipped == 1 and f"{path}:3:" in report.examples[0]


def test_duplicate_ids_are_malformed(tmp_path):
    row = json.dumps({"id": "same", "question": "ok?", "options": ["a", "b"], "answer": 0})
    path = _write(tmp_path, "q.jsonl", [row, row])
    with pytest.raises(MalformedRecord, match=r":2: duplicate question id"):
        load_questions(path)


def test_obqa_bad_answer_key(tmp_path):
    rec = {"id": "1", "question_stem": "Q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}
    path = _write(tmp_path, "obqa.jsonl", [json.dumps(rec)])
    with pytest.raises(MalformedRecord, match=r"obqa.jsonl:1: answerKey 'E'"):
        load_questions(path)


def test_json_array_error_points_at_the_record(tmp_path):
    recs = [{"qid": "a", "question": "Q?", "answer": True}, {"qid": "b", "question": "Q2?", "answer": "yes"}]
    p = tmp_path / "s.json"
    p.write_text(json.dumps(recs, indent=2))
    with pytest.raises(MalformedRecord) as err:
        load_questions(str(p), "strategyqa")
    assert str(err.value).startswith(f"{p}:7:") and "true or false" in str(err.value)


def test_non_utf8_and_empty_files(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"question": "ok", "options": ["a", "b"], "answer": 0}\n{"question": "caf\xe9"}\n')
    with pytest.raises(MalformedRecord, match=r"latin.jsonl:2: not valid UTF-8"):
        load_questions(str(p))
    e = tmp_path / "empty.jsonl"
    e.write_text("\n")
    with pytest.raises(MalformedRecord, match="no questions"):
        load_questions(str(e))


# ---------------------------------------------------------------- knowledge bases


def test_kb_jsonl_and_empty_documents(tmp_path):
    path = _write(tmp_path, "kb.jsonl", [
        json.dumps({"id": "d1", "title": "T", "text": "Alpha."}),
        json.dumps({"id": "d2", "text": "   "}),
        json.dumps({"text": "Gamma."}),
    ])
    docs, report = load_documents(path)
    assert [d.id for d in docs] == ["d1", "kb:3"] and report.skipped == 1
    assert "kb.jsonl:2: empty document" in report.examples[0]
    bad = _write(tmp_path, "bad.jsonl", [json.dumps({"id": "x", "body": "no text"})])
    with pytest.raises(MalformedRecord, match=r"bad.jsonl:1: missing field 'text'"):
        load_documents(bad)


def test_kb_folder_and_empty_kb(tmp_path):
    (tmp_path / "kb" / "sub").mkdir(parents=True)
    (tmp_path / "kb" / "a.md").write_text("# Heading A\nBody.")
    (tmp_path / "kb" / "sub" / "b.txt").write_text("Plain b.")
    (tmp_path / "kb" / "ignored.bin").write_bytes(b"\x00")
    docs, report = load_documents(str(tmp_path / "kb"))
    assert report.format == "folder"
    assert [(d.id, d.title) for d in docs] == [("a.md", "Heading A"), ("sub/b.txt", "b")]
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(MalformedRecord, match="no non-empty documents"):
        load_documents(str(tmp_path / "blank.txt"))
    with pytest.raises(FileNotFoundError):
        load_documents(str(tmp_path / "missing.txt"))


def test_kb_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["one", ""]}), tmp_path / "kb.parquet")
    docs, report = load_documents(str(tmp_path / "kb.parquet"))
    assert [d.text for d in docs] == ["one"] and report.skipped == 1
