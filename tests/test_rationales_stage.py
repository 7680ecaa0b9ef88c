"""The rationales stage on the session Ray against a reference teacher we can inspect."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, shared
from typer.testing import CliRunner

from kard_ray.artifacts import RunDir
from kard_ray.cli import app
from kard_ray.config import load_config
from kard_ray.pipeline import run_one
from kard_ray.registry import output
from kard_ray.stages.data import read_split
from kard_ray.teacher.reference_server import ReferenceTeacherServer, ServerOptions

WORLD = ["data.synth.seed=7", "data.synth.train_people=30", "data.synth.dev_people=2", "data.synth.test_people=2",
         "data.synth.towns=16", "data.synth.regions=5"]
FAST_RETRIES = ["teacher.backoff_base_s=0.02", "teacher.backoff_max_s=0.2", "teacher.max_retries=8"]


def quiet(_msg):
    pass


def prepared(tmp_path, *sets):
    """A run with the tiny world's data stage done, and the config pointing at a teacher we start."""
    cfg = load_config(None, [f"run_dir={tmp_path}/run", *WORLD, "teacher.n=3", "teacher.model=kard-reference-teacher",
                             *FAST_RETRIES, *sets])
    run = RunDir(cfg.run_dir)
    run_one("data", cfg, run, log=quiet)
    return cfg, run, run.path(output("data", "world"))


def with_url(cfg, url):
    return cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"base_url": url})})


def outputs(run):
    return (pq.read_table(run.path("rationales/rationales.parquet")),
            pq.read_table(run.path("rationales/failures.parquet")))


@pytest.mark.ray
def test_generate_then_rerun_is_free(ray_session, tmp_path):
    cfg, run, world = prepared(tmp_path)
    with ReferenceTeacherServer(world, ServerOptions(wrong_rate=0.25, seed=1)) as server:
        cfg = with_url(cfg, server.base_url)
        m = run_one("rationales", cfg, run, log=quiet)
        first = server.stats()
        assert m["counts"]["questions"] == 60 and m["counts"]["samples"] == 180
        assert first["billed_requests"] == 60  # one request per question, n=3 in it
        assert 0.6 < m["extra"]["teacher_accuracy"] < 0.9 and m["counts"]["kept"] < 180
        assert m["extra"]["tokens_billed_this_run"]["completion"] == first["completion_tokens"]
        again = run_one("rationales", cfg, run, force=True, log=quiet)
        assert server.stats()["requests"] == first["requests"]  # the cache made the rerun free
        assert again["counts"]["samples_cached"] == 180 and again["extra"]["cost_usd_this_run"] == 0
    table, failures = outputs(run)
    assert failures.num_rows == 0
    per_q = pq.read_table(run.path("rationales/per_question.parquet")).to_pylist()
    assert len(per_q) == 60 and sum(r["kept"] for r in per_q) == m["counts"]["kept"]
    assert set(table.column_names) >= {"qid", "sample", "rationale", "parsed_answer", "correct", "teacher",
                                       "prompt_tokens", "completion_tokens"}


@pytest.mark.ray
def test_faults_end_in_rationales_or_recorded_failures(ray_session, tmp_path):
    cfg, run, world = prepared(tmp_path, "teacher.timeout_s=0.5", "teacher.max_retries=2")
    options = ServerOptions(fault_rate=0.2, stall_s=1.0, retry_after_s=0.05, seed=5)
    with ReferenceTeacherServer(world, options) as server:
        m = run_one("rationales", with_url(cfg, server.base_url), run, log=quiet)
        stats = server.stats()
    table, failures = outputs(run)
    qids = {q.id for q in read_split(run, "train")}
    assert set(table["qid"].to_pylist()) | set(failures["qid"].to_pylist()) == qids
    assert set(stats["faults"]) == {"429", "500", "timeout", "malformed"}
    assert stats["duplicate_billed"] == 0
    assert failures.num_rows == m["counts"]["failed_requests"] and all(failures["error"].to_pylist())


@pytest.mark.ray
def test_key_never_leaks_and_wrong_key_aborts(ray_session, tmp_path, monkeypatch):
    secret = "sk-kard-test-5ecr3t-value"
    cfg, run, world = prepared(tmp_path)
    monkeypatch.setenv("KARD_TEST_TEACHER_KEY", secret)
    runner = CliRunner()
    with ReferenceTeacherServer(world, ServerOptions(api_key=secret)) as server:
        args = ["rationales", "--run-dir", cfg.run_dir, "--set", f"teacher.base_url={server.base_url}",
                "--set", "teacher.api_key_env=KARD_TEST_TEACHER_KEY", *[a for s in WORLD + FAST_RETRIES
                                                                       for a in ("--set", s)],
                "--set", "teacher.n=3", "--set", "teacher.model=kard-reference-teacher"]
        ok = runner.invoke(app, args)
        assert ok.exit_code == 0, ok.output
        assert secret not in ok.output
        for path in Path(cfg.run_dir).rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        monkeypatch.setenv("KARD_TEST_TEACHER_KEY", "sk-wrong")
        fresh = [a if a != cfg.run_dir else str(tmp_path / "fresh") for a in args]  # no cache: real calls
        bad = runner.invoke(app, fresh + ["--set", "teacher.failure_budget=0.2"])
    assert bad.exit_code == 3 and "failure budget exceeded" in bad.output and "HTTP 401" in bad.output
    assert "sk-wrong" not in bad.output


@pytest.mark.ray
def test_killed_job_resumes_without_paying_twice(ray_session, tmp_path):
    cfg, run, world = prepared(tmp_path, "teacher.concurrency=4", "teacher.actors=1", "teacher.batch_size=8")
    with ReferenceTeacherServer(world, ServerOptions(latency_ms=300)) as server:
        # its own embedded Ray: the killed job shares nothing with this session's cluster
        args = [sys.executable, "-m", "kard_ray.cli", "rationales", "--run-dir", cfg.run_dir,
                "--set", f"teacher.base_url={server.base_url}", "--set", "ray.num_cpus=2",
                *[a for s in WORLD + FAST_RETRIES for a in ("--set", s)], "--set", "teacher.n=3",
                "--set", "teacher.model=kard-reference-teacher", "--set", "teacher.concurrency=4",
                "--set", "teacher.actors=1", "--set", "teacher.batch_size=8"]
        log = open(tmp_path / "killed-job.log", "wb")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)
        deadline = time.time() + 180
        while server.stats()["billed_requests"] < 12 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        billed_before = server.stats()["billed_requests"]
        tail = (tmp_path / "killed-job.log").read_text(errors="replace")[-3000:]
        assert 12 <= billed_before < 60 and not run.is_done("rationales"), tail
        m = run_one("rationales", with_url(cfg, server.base_url), run, log=quiet)
        stats = server.stats()
    assert m["counts"]["samples"] == 180 and m["counts"]["samples_cached"] >= 3 * (billed_before - 4)
    assert stats["unique_billed"] == 60 and stats["duplicate_billed"] == 0


@pytest.mark.data
def test_import_thoughtsource_rationales(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path}/run",
                             f"data.train={shared('strategyqa/strategyqa_train_split_2061.json')}",
                             f"teacher.import_path={shared('strategyqa/thoughtsource100_strategy_qa_train_gpt-3.5-turbo_and_gpt-4.jsonl')}"])
    run = RunDir(cfg.run_dir)
    run_one("data", cfg, run, log=quiet)
    m = run_one("rationales", cfg, run, log=quiet)
    table, _ = outputs(run)
    assert m["extra"]["imported"] + m["extra"]["unmatched"] == 200 and m["extra"]["imported"] > 150
    assert set(table["teacher"].to_pylist()) == {"gpt-3.5-turbo", "gpt-4"}
    source = [json.loads(line) for line in open(cfg.teacher.import_path)]
    def norm(text):
        return " ".join(text.lower().split())

    questions = {q.id: norm(q.question) for q in read_split(run, "train")}
    truth = {(norm(r["question"]), r["teacher"]): r["teacher_correct"] for r in source}
    rows = table.to_pylist()
    agree = sum(truth[(questions[r["qid"]], r["teacher"])] == r["correct"] for r in rows)
    assert agree / len(rows) > 0.9  # our parser reads the same answers as ThoughtSource's
