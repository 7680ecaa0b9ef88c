"""The one job entrypoint, ``python -m jobs <stage>...``: stage names from the registry, help, a real run."""

import subprocess
import sys

import pytest

from kard_ray.registry import STAGES


@pytest.mark.ray
def test_a_stage_job_runs_in_process(ray_session, tmp_path):
    import jobs
    from kard_ray.artifacts import RunDir

    manifests = jobs.main(["data", "--run-dir", str(tmp_path / "run"), "--set", "data.synth.train_people=4",
                           "--set", "data.synth.towns=6", "--set", "data.synth.regions=4"])
    assert list(manifests) == ["data"] and RunDir(str(tmp_path / "run")).is_done("data")


def test_help_lists_every_registered_stage():
    out = subprocess.run([sys.executable, "-m", "jobs", "--help"], capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in ["run", *STAGES])


def test_an_unknown_stage_is_a_usage_error():
    import jobs

    with pytest.raises(SystemExit) as exit_:
        jobs.parse_args(["train_reranker"])
    assert exit_.value.code == 2
