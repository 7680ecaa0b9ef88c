"""The `kard` command as a user runs it."""

import json

from conftest import REPO
from typer.testing import CliRunner

from kard_ray.cli import app

runner = CliRunner()


def test_help_lists_a_command_per_stage_and_keeps_the_old_names_working():
    from kard_ray.registry import OLD_COMMANDS, STAGES

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = (*STAGES, "synth", "report", "run", "serve", "demo", "teacher", "config")
    for cmd in commands:
        assert cmd in result.output
    for old in ("prepare", "train-reranker", "train-student"):  # hidden aliases: not listed, still running
        assert old not in result.output
    subs = [["teacher", "reference-serve"], ["teacher", "serve"], ["data", "check"], ["config", "show"],
            ["kb", "search"], *[[c] for c in commands], *[old.split() for old in OLD_COMMANDS], ["train-student"]]
    for sub in subs:
        sub = [*sub, "--help"]
        assert runner.invoke(app, sub).exit_code == 0, sub


def test_train_student_rejects_an_unknown_method():
    result = runner.invoke(app, ["train-student", "--method", "magic"])
    assert result.exit_code == 2 and "unknown method" in result.output


def test_report_without_a_report_names_the_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no evaluation report" in result.output


def test_config_show_and_bad_key():
    ok = runner.invoke(app, ["config", "show", "--set", "student.lr=0.001"])
    assert ok.exit_code == 0 and "lr: 0.001" in ok.output
    bad = runner.invoke(app, ["config", "show", "--set", "student.lrr=0.001"])
    assert bad.exit_code == 2 and "student.lrr" in bad.output and "unknown key" in bad.output


def test_synth_then_check(tmp_path):
    out = tmp_path / "w"
    r = runner.invoke(app, ["synth", "--out", str(out), "--seed", "2", "--train-people", "5", "--dev-people", "2",
                            "--test-people", "2", "--towns", "6", "--regions", "4"])
    assert r.exit_code == 0, r.output
    check = runner.invoke(app, ["data", "check", str(out / "train.jsonl")])
    assert check.exit_code == 0 and "rows=10" in check.output
    kb = runner.invoke(app, ["data", "check", "--kb", str(out / "kb.jsonl")])
    assert kb.exit_code == 0 and "format=jsonl" in kb.output


def test_check_reports_file_and_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"question": "a?", "options": ["x", "y"], "answer": 0}) + "\nnot json\n")
    r = runner.invoke(app, ["data", "check", str(f)])
    assert r.exit_code == 1 and "q.jsonl:2" in r.output.replace("\n", "")
    r = runner.invoke(app, ["data", "check", str(f), "--skip-malformed"])
    assert r.exit_code == 0 and "skipped=1" in r.output


def test_prepare_runs_then_skips(tmp_path):
    args = ["data", "--run-dir", str(tmp_path / "run"), "--set", "data.synth.train_people=5",
            "--set", "data.synth.towns=6", "--set", "data.synth.regions=4"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "[data] done" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "skipped" in second.output
    assert (tmp_path / "run" / "config.resolved.yaml").is_file()


def test_serve_rejects_zero_hops_before_starting_anything(tmp_path):
    result = runner.invoke(app, ["serve", str(tmp_path), "--hops", "0"])
    assert result.exit_code != 0 and "hops" in result.output


def test_the_cli_loads_no_torch_ray_or_transformers():
    """`kard --help` and the plan check stay instant: the heavy libraries load only when a stage runs."""
    import subprocess
    import sys

    code = ("import sys, kard_ray.cli, kard_ray.preflight, jobs; "
            "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_serve_direct_ingress_on_a_cluster_says_how_to_start_its_nodes(tmp_path):
    result = runner.invoke(app, ["serve", str(tmp_path), "--direct-ingress", "--address", "ray://head:10001"])
    assert result.exit_code != 0 and "RAY_SERVE_ENABLE_DIRECT_INGRESS=1" in result.output
