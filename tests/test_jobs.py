import pytest


@pytest.mark.ray
def test_prepare_data_job_runs_in_process(ray_session, tmp_path):
    from jobs import prepare_data
    from kard_ray.artifacts import RunDir

    prepare_data.main(["--run-dir", str(tmp_path / "run"), "--set", "data.synth.train_people=4",
                       "--set", "data.synth.towns=6", "--set", "data.synth.regions=4"])
    assert RunDir(str(tmp_path / "run")).is_done("data")


@pytest.mark.parametrize("name", ["prepare_data", "kb_build", "rationales", "augment", "train_reranker",
                                  "train_student", "evaluate", "pipeline"])
def test_every_job_has_help(name):
    import importlib

    module = importlib.import_module(f"jobs.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
