"""The run-directory contract: matching stages are skipped, half-written ones never count as done."""

import json

import pyarrow as pa
import pytest

from kard_ray.artifacts import MANIFEST, RunDir, StageResult, run_stage
from kard_ray.config import load_config
from kard_ray.fs import fingerprint_path


class Body:
    """A stage body that counts its calls and can die halfway."""

    def __init__(self, crash=False):
        self.calls, self.crash = 0, crash

    def __call__(self, run: RunDir) -> StageResult:
        self.calls += 1
        run.write_table("toy/rows.parquet", pa.table({"x": [1, 2, 3]}))
        if self.crash:
            raise RuntimeError("killed halfway")
        return StageResult(counts={"rows": 3})


def quiet(_msg):
    pass


def test_manifest_contents_and_skip(tmp_path):
    run, cfg = RunDir(str(tmp_path / "run")), load_config()
    body = Body()
    m = run_stage(run, "toy", body, config=[cfg.kb], log=quiet)
    assert body.calls == 1
    on_disk = json.loads((tmp_path / "run" / "toy" / MANIFEST).read_text())
    assert on_disk == m
    assert m["counts"] == {"rows": 3} and m["outputs"][0]["path"] == "rows.parquet"
    assert {"python", "ray", "pyarrow"} <= set(m["versions"]) and m["config_hash"]
    run_stage(run, "toy", body, config=[cfg.kb], log=quiet)
    assert body.calls == 1  # skipped
    run_stage(run, "toy", body, config=[cfg.kb], force=True, log=quiet)
    assert body.calls == 2
    changed = load_config(None, ["kb.dedupe=false"])
    run_stage(run, "toy", body, config=[changed.kb], log=quiet)
    assert body.calls == 3


def test_input_content_change_reruns(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    src = tmp_path / "in.txt"
    src.write_text("one")
    body = Body()
    run_stage(run, "toy", body, inputs={"src": str(src)}, log=quiet)
    run_stage(run, "toy", body, inputs={"src": str(src)}, log=quiet)
    assert body.calls == 1
    src.write_text("two")
    run_stage(run, "toy", body, inputs={"src": str(src)}, log=quiet)
    assert body.calls == 2


def test_half_written_stage_is_not_done(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run_stage(run, "toy", Body(), log=quiet)
    assert run.is_done("toy")
    with pytest.raises(RuntimeError, match="killed halfway"):
        run_stage(run, "toy", Body(crash=True), force=True, log=quiet)
    # outputs were written, but the old manifest was withdrawn first and no new one committed
    assert run.exists("toy", "rows.parquet") and not run.is_done("toy")
    body = Body()
    run_stage(run, "toy", body, log=quiet)
    assert body.calls == 1 and run.is_done("toy")


def test_scratch_outlives_a_crash_and_goes_once_the_manifest_lands(tmp_path):
    """Training checkpoints are scratch: a killed stage keeps them to resume, a finished one deletes them."""
    run = RunDir(str(tmp_path / "run"))

    def body(crash):
        def write_checkpoint_then(run: RunDir) -> StageResult:
            run.write_text("train/toy-1/checkpoint_0/state", "resume from here")
            if crash:
                raise RuntimeError("killed halfway")
            return StageResult(counts={"rows": 1}, scratch=["train/toy-1"])
        return write_checkpoint_then

    with pytest.raises(RuntimeError, match="killed halfway"):
        run_stage(run, "toy", body(crash=True), log=quiet)
    assert run.exists("train", "toy-1", "checkpoint_0", "state") and not run.is_done("toy")
    run_stage(run, "toy", body(crash=False), log=quiet)
    assert run.is_done("toy") and not run.exists("train", "toy-1")


def test_upstream_keys_chain(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="needs stage 'toy'"):
        run_stage(run, "next", Body(), upstream=["toy"], log=quiet)
    run_stage(run, "toy", Body(), log=quiet)
    down = Body()
    run_stage(run, "next", down, upstream=["toy"], log=quiet)
    run_stage(run, "next", down, upstream=["toy"], log=quiet)
    assert down.calls == 1
    run_stage(run, "toy", Body(), force=True, config=["changed"], log=quiet)  # upstream changed
    run_stage(run, "next", down, upstream=["toy"], log=quiet)
    assert down.calls == 2


def test_uri_paths_and_atomic_json(tmp_path):
    run = RunDir(f"file://{tmp_path}/r")
    run.write_json("a/b.json", {"k": 1})
    assert run.read_json("a/b.json") == {"k": 1}
    assert not list((tmp_path / "r" / "a").glob("*.tmp-*"))
    assert run.is_local and run.uri_of("a") == f"{tmp_path}/r/a"


def test_fingerprints_follow_content(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same")
    b.write_text("same")
    assert fingerprint_path(str(a)) == fingerprint_path(str(b))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    before = fingerprint_path(str(tmp_path / "d"))
    (tmp_path / "d" / "x").write_text("2")
    assert fingerprint_path(str(tmp_path / "d")) != before
    with pytest.raises(FileNotFoundError):
        fingerprint_path(str(tmp_path / "missing"))


def test_resumable_stage_keeps_its_folder_only_under_the_same_key(tmp_path):
    """clean=False: what a killed run left is reused by a rerun with the same key, never by another key."""

    def crash(r: RunDir) -> StageResult:
        r.write_text("s/part-1", "done before the kill")
        raise KeyboardInterrupt

    def finish(r: RunDir) -> StageResult:
        return StageResult(counts={"kept": int(r.exists("s/part-1"))})

    for config, expected in ((["a"], 1), (["b"], 0)):
        run = RunDir(str(tmp_path / config[0]))
        with pytest.raises(KeyboardInterrupt):
            run_stage(run, "s", crash, config=["a"], clean=False, log=quiet)
        m = run_stage(run, "s", finish, config=config, clean=False, log=quiet)
        assert m["counts"]["kept"] == expected
        assert not run.exists("s/_work_key") and [o["path"] for o in m["outputs"]] == ["part-1"] * expected
