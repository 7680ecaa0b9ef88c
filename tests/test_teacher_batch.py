"""The teacher's batch mode against the reference teacher's Batch API, through the real openai client."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from openai import OpenAI
from test_rationales_stage import WORLD, outputs, prepared, quiet, with_url
from typer.testing import CliRunner

from kard_ray.artifacts import RunDir
from kard_ray.cli import app
from kard_ray.config import to_yaml
from kard_ray.pipeline import run_one
from kard_ray.registry import TEACHER_CACHE
from kard_ray.stages.rationales import plan
from kard_ray.teacher.batch import LEDGER, BatchLedger, request_line, split_lines
from kard_ray.teacher.cache import TeacherCache
from kard_ray.teacher.reference_server import ReferenceTeacherServer, ServerOptions
from kard_ray.teacher.worker import TeacherAborted, plan_requests

BATCH = ["teacher.mode=batch", "teacher.batch_poll_s=0.05", "teacher.batch_poll_max_s=0.2"]


def ledger_of(run) -> BatchLedger:
    return BatchLedger(RunDir(run.uri_of(TEACHER_CACHE)))


def ledger(run):
    return ledger_of(run).entries()


def test_split_lines_respects_request_and_byte_limits():
    lines = [b"x" * 10] * 5
    assert split_lines(lines, 2, 1000) == [[0, 1], [2, 3], [4]]
    assert split_lines(lines, 100, 25) == [[0, 1], [2, 3], [4]]
    assert split_lines(lines, 100, 50) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="batch_max_bytes"):
        split_lines([b"x" * 30], 10, 25)


@pytest.mark.ray
def test_batch_run_matches_online_run(ray_session, tmp_path):
    online_cfg, online_run, world = prepared(tmp_path / "online")
    batch_cfg, batch_run, _ = prepared(tmp_path / "batch", *BATCH)
    with ReferenceTeacherServer(world, ServerOptions(wrong_rate=0.25, seed=1, batch_delay_s=0.2)) as server:
        online = run_one("rationales", with_url(online_cfg, server.base_url), online_run, log=quiet)
        assert server.stats()["batches_created"] == 0
        batch = run_one("rationales", with_url(batch_cfg, server.base_url), batch_run, log=quiet)
        stats = server.stats()
        assert stats["batches_created"] == 1 and stats["batch_requests_billed"] == 60
        (on_table, on_failures), (b_table, b_failures) = outputs(online_run), outputs(batch_run)
        again = run_one("rationales", with_url(batch_cfg, server.base_url), batch_run, force=True, log=quiet)
        assert server.stats()["batches_created"] == 1 and again["counts"]["samples_cached"] == 180
    assert on_failures.num_rows == b_failures.num_rows == 0
    assert b_table.to_pylist() == on_table.to_pylist()  # same rationales, answers, tokens, every column
    per_q = [pq.read_table(r.path("rationales/per_question.parquet")).to_pylist() for r in (online_run, batch_run)]
    assert per_q[0] == per_q[1]
    assert batch["counts"] == online["counts"]
    assert online["extra"]["teacher_mode"] == "online" and batch["extra"]["teacher_mode"] == "batch"
    assert batch["extra"]["cost_usd_this_run"] == pytest.approx(online["extra"]["cost_usd_this_run"] / 2, abs=2e-4)
    assert batch["extra"]["batch"]["tokens_billed_batch"] == online["extra"]["tokens_billed_this_run"]
    assert [e["state"] for e in ledger(batch_run)] == ["collected"]


def test_job_killed_while_polling_resumes_without_submitting_again(tmp_path):
    cfg, run, world = prepared(tmp_path, *BATCH)
    with ReferenceTeacherServer(world, ServerOptions(batch_delay_s=600)) as server:
        config = tmp_path / "config.yaml"
        config.write_text(to_yaml(with_url(cfg, server.base_url)))
        script = ("import sys; from kard_ray.config import load_config; from kard_ray.artifacts import RunDir; "
                  "from kard_ray.pipeline import run_one; cfg = load_config(sys.argv[1]); "
                  "run_one('rationales', cfg, RunDir(cfg.run_dir))")
        log = open(tmp_path / "killed-job.log", "wb")
        proc = subprocess.Popen([sys.executable, "-c", script, str(config)], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (
                server.stats()["batch_calls"].get("batches.retrieve", 0) >= 2
                and [e["state"] for e in ledger(run)] == ["submitted"]):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        tail = (tmp_path / "killed-job.log").read_text(errors="replace")[-3000:]
        assert proc.returncode == -signal.SIGKILL and not run.is_done("rationales"), tail
        (entry,) = ledger(run)
        assert entry["state"] == "submitted" and entry["batch_id"] and len(entry["requests"]) == 60
        assert server.stats()["batch_requests_billed"] == 0  # still in progress when killed
        server.teacher.options.batch_delay_s = 0.0  # the provider finishes it while nobody is polling
        m = run_one("rationales", cfg.model_copy(update={"teacher": cfg.teacher.model_copy(
            update={"base_url": server.base_url})}), run, log=quiet)
        stats = server.stats()
    assert stats["batches_created"] == 1 and stats["batch_calls"]["files.create"] == 1
    assert stats["batch_requests_billed"] == 60 and stats["duplicate_billed"] == 0
    assert m["counts"]["samples"] == 180 and m["counts"]["failed_requests"] == 0
    assert m["extra"]["batch"]["batches_resumed"] == 1 and m["extra"]["batch"]["batches_created"] == 0
    assert [e["state"] for e in ledger(run)] == ["collected"]


@pytest.mark.parametrize("retry", ["batch", "online"])
def test_partial_failures_are_retried_and_only_they_are_billed_again(tmp_path, retry):
    cfg, run, world = prepared(tmp_path, *BATCH, f"teacher.batch_retry={retry}", "teacher.batch_retries=1")
    with ReferenceTeacherServer(world, ServerOptions(batch_fail_rate=0.3, batch_delay_s=0, seed=3)) as server:
        m = run_one("rationales", with_url(cfg, server.base_url), run, log=quiet)
        stats = server.stats()
    entries = ledger(run)
    first = entries[0]
    failed_first = set(first["failed"])
    assert first["round"] == 0 and 8 <= len(failed_first) <= 30
    assert all(e.startswith("HTTP 500") for e in first["failed"].values())
    table, failures = outputs(run)
    assert stats["duplicate_billed"] == 0
    if retry == "batch":
        (second,) = entries[1:]
        assert second["round"] == 1 and set(second["requests"]) == failed_first  # only they, once more
        assert stats["batches_created"] == 2 and stats["requests"] == 0
        assert stats["batch_requests_billed"] == 60 - len(second["failed"]) == stats["unique_billed"]
        assert failures.num_rows == len(second["failed"]) and set(failures["attempts"].to_pylist()) <= {2}
    else:
        assert len(entries) == 1 and stats["batches_created"] == 1
        assert stats["requests"] == len(failed_first) and stats["batch_requests_billed"] == 60 - len(failed_first)
        assert stats["unique_billed"] == 60 and failures.num_rows == 0
        assert m["extra"]["batch"]["requests_retried_online"] == len(failed_first)
    assert table.num_rows + 3 * failures.num_rows == 180 and m["counts"]["failed_requests"] == failures.num_rows


def test_expired_batch_is_resubmitted_once_then_recorded_as_failures(tmp_path):
    cfg, run, world = prepared(tmp_path / "a", *BATCH, "teacher.failure_budget=1.0")
    with ReferenceTeacherServer(world, ServerOptions(batch_expire=2, batch_delay_s=0)) as server:
        m = run_one("rationales", with_url(cfg, server.base_url), run, log=quiet)
        stats = server.stats()
    assert stats["batches_created"] == 2 and stats["batches_expired"] == 2 and stats["billed_requests"] == 0
    assert [e["round"] for e in ledger(run)] == [0, 1]
    table, failures = outputs(run)
    assert table.num_rows == 0 and failures.num_rows == 60
    assert all(e.startswith("batch_expired") for e in failures["error"].to_pylist())
    assert m["extra"]["batch"]["batches_by_status"] == {"expired": 2}
    assert m["extra"]["failure_reasons"] == {"batch_expired": 60}
    # with the default failure budget, a run where everything expires is aborted instead
    cfg, run, world = prepared(tmp_path / "b", *BATCH)
    with ReferenceTeacherServer(world, ServerOptions(batch_expire=2, batch_delay_s=0)) as server:
        with pytest.raises(TeacherAborted, match="failure budget exceeded.*batch_expired"):
            run_one("rationales", with_url(cfg, server.base_url), run, log=quiet)
        assert server.stats()["batches_created"] == 2
    assert not run.is_done("rationales")


def test_batches_split_by_the_providers_limits(tmp_path):
    cfg, run, world = prepared(tmp_path, *BATCH, "teacher.batch_max_requests=25", "teacher.batch_max_bytes=40000")
    options = ServerOptions(batch_delay_s=0, batch_max_requests=25, batch_max_bytes=40000)
    with ReferenceTeacherServer(world, options) as server:
        m = run_one("rationales", with_url(cfg, server.base_url), run, log=quiet)
        uploads = [f["object"] for f in server.teacher.batches.files.values() if f["object"]["purpose"] == "batch"]
        stats = server.stats()
    assert stats["batches_created"] == len(uploads) >= 3 and stats["batch_requests_billed"] == 60
    assert all(u["bytes"] <= 40000 for u in uploads)
    assert all(len(e["requests"]) <= 25 for e in ledger(run)) and m["counts"]["samples"] == 180


def test_an_uploaded_but_unrecorded_batch_is_adopted_not_created_again(tmp_path):
    """Killed between batches.create and the ledger's second write: the batch is found by its input file."""
    cfg, run, world = prepared(tmp_path, *BATCH)
    t = cfg.teacher
    with ReferenceTeacherServer(world, ServerOptions(batch_delay_s=0)) as server:
        cfg = with_url(cfg, server.base_url)
        from kard_ray.stages.rationales import _questions, endpoint_identity

        _, requests = plan_requests(t, TeacherCache(run.uri_of(TEACHER_CACHE)), _questions(cfg, run),
                                    endpoint_identity(cfg.teacher))
        client = OpenAI(base_url=server.base_url, api_key="k")
        f = client.files.create(file=("in.jsonl", b"".join(request_line(t, r) for r in requests.values())),
                                purpose="batch")
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        ledger_of(run).save({"entry": "0-test", "identity": endpoint_identity(cfg.teacher), "model": t.model,
                               "round": 0, "state": "uploaded", "input_file_id": f.id, "batch_id": None,
                               "status": None, "created_at": time.time(),
                               "requests": {cid: r.keys for cid, r in requests.items()}})
        m = run_one("rationales", cfg, run, log=quiet)
        stats = server.stats()
    assert stats["batches_created"] == 1 and stats["batch_requests_billed"] == 60 and stats["duplicate_billed"] == 0
    assert m["counts"]["samples"] == 180 and m["extra"]["batch"]["batches_resumed"] == 1


def test_a_batch_unknown_to_a_real_endpoint_stops_the_run(tmp_path):
    cfg, run, world = prepared(tmp_path, *BATCH)
    with ReferenceTeacherServer(world, ServerOptions(batch_delay_s=0)) as server:
        cfg = with_url(cfg, server.base_url)
        ledger_of(run).save({"entry": "0-gone", "identity": server.base_url, "model": cfg.teacher.model,
                               "round": 0, "state": "submitted", "input_file_id": "file-x", "batch_id": "batch_gone",
                               "status": "in_progress", "created_at": time.time(), "requests": {"c": ["c"]}})
        with pytest.raises(RuntimeError, match="batch_gone .* unknown to the endpoint"):
            run_one("rationales", cfg, run, log=quiet)
        assert server.stats()["batches_created"] == 0  # nothing was submitted in its place


def test_dry_run_shows_online_and_batch_prices(tmp_path, monkeypatch):
    from kard_ray import cli

    cfg, run, _ = prepared(tmp_path, *BATCH, "teacher.price_per_1k_prompt=0.01",
                           "teacher.price_per_1k_completion=0.03")
    p = plan(cfg, run)
    assert p["mode"] == "batch" and p["calls"] == 60 and p["cached_samples"] == 0
    assert p["est_cost_batch_usd"] == pytest.approx(p["est_cost_usd"] / 2, abs=1e-4) and p["est_cost_usd"] > 0
    monkeypatch.setattr(cli.console, "width", 400)
    args = ["rationales", "--dry-run", "--mode", "batch", "--run-dir", cfg.run_dir,
            *[a for s in [*WORLD, "teacher.n=3", "teacher.model=kard-reference-teacher",
                          "teacher.price_per_1k_prompt=0.01", "teacher.price_per_1k_completion=0.03"]
              for a in ("--set", s)]]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "est. cost online (USD)" in out.output and "est. cost batch (USD) (teacher.mode)" in out.output
    assert f"{p['est_cost_usd']}" in out.output and f"{p['est_cost_batch_usd']}" in out.output
    assert not (tmp_path / "run" / TEACHER_CACHE / LEDGER).exists()  # a dry run submits nothing


def test_batch_ledger_is_written_before_polling(tmp_path, monkeypatch):
    cfg, run, world = prepared(tmp_path, *BATCH)
    seen = []
    with ReferenceTeacherServer(world, ServerOptions(batch_delay_s=0.3)) as server:
        from kard_ray.teacher import batch as batch_module

        retrieve = batch_module.BatchSession.retrieve

        def spying(self, entry):  # what the ledger holds on disk at every poll
            seen.append([(e["state"], e["batch_id"], len(e["requests"])) for e in ledger(run)])
            return retrieve(self, entry)

        monkeypatch.setattr(batch_module.BatchSession, "retrieve", spying)
        run_one("rationales", with_url(cfg, server.base_url), run, log=quiet)
    assert seen and all(s[0][0] == "submitted" and s[0][1] and s[0][2] == 60 for s in seen)
    entry = ledger(run)[0]["entry"]
    assert json.loads(run.read_bytes(f"{TEACHER_CACHE}/{LEDGER}/{entry}.json"))["state"] == "collected"
