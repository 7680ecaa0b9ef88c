import pytest


@pytest.mark.ray
def test_prepare_data_job_runs_in_process(ray_session, tmp_path):
    from jobs import prepare_data
    from kard_ray.artifacts import RunDir

    prepare_data.main(["--run-dir", str(tmp_path / "run"), "--set", "data.synth.train_people=4",
                       "--set", "data.synth.towns=6", "--set", "data.synth.regions=4"])
    assert RunDir(str(tmp_path / "run")).is_done("data")
