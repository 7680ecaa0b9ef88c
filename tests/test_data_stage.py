import json

from kard_ray.artifacts import RunDir
from kard_ray.config import load_config
from kard_ray.pipeline import run_one
from kard_ray.stages.data import read_split


def quiet(_msg):
    pass


def test_synthetic_world_stage_and_resume(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path}/run", "data.synth.train_people=10", "data.synth.dev_people=3",
                             "data.synth.test_people=4", "data.synth.towns=8", "data.synth.regions=4"])
    run = RunDir(cfg.run_dir)
    m = run_one("data", cfg, run, log=quiet)
    assert m["counts"]["train"] == 20 and m["counts"]["test"] == 8
    assert run.exists("data/world/world.json")
    test = read_split(run, "test")
    assert len(test) == 8 and all(q.facts for q in test)
    again = run_one("data", cfg, run, log=quiet)
    assert again["started_at"] == m["started_at"]  # skipped


def test_files_stage_counts_skipped_rows(tmp_path):
    good = {"question": "ok?", "options": ["a", "b"], "answer": 0}
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps(good) + "\n{broken\n" + json.dumps({**good, "id": "two"}) + "\n")
    cfg = load_config(None, [f"run_dir={tmp_path}/run", f"data.train={f}", "data.on_malformed=skip"])
    m = run_one("data", cfg, RunDir(cfg.run_dir), log=quiet)
    assert m["counts"] == {"train": 2, "train_skipped": 1, "annotated_facts": 0}
    assert "train.jsonl:2" in m["extra"]["train_read"]["examples"][0]
