"""One truth, two paths: the Serve endpoint answers every test question exactly as the evaluation did.

The tiny finished run is served with the settings of its resolved config; each test question sent to
``/v1/answer`` must come back with the passage ids (same order) and the generation that
``evaluate/predictions.parquet`` holds for ``kard_reranker``. Then one setting at a time is made to drift
(an override) and the comparison must see it.
"""

import json
import urllib.request

import pyarrow.parquet as pq
import pytest
from conftest import served_apps

pytestmark = pytest.mark.ray

DRIFTS = {"exact": {}, "query_without_options": {"query_with_options": False}, "one_hop": {"hops": 1},
          "short_student_input": {"student_max_input_length": 24}}


@pytest.fixture(scope="module")
def served(tiny_pipeline):
    from serve.app import ServeAppArgs, build_app

    _, run, _ = tiny_pipeline
    apps = {name: build_app(ServeAppArgs(run_dir=run.path(), overrides=overrides, model_cpus=0.25))
            for name, overrides in DRIFTS.items()}
    with served_apps(apps) as base:
        yield base, run


def mismatches(base: str, run) -> list[str]:
    """The test questions whose served passages or generation differ from the evaluation's kard_reranker row."""
    from serve.parity import parity

    result = parity(base, run)
    assert result["questions"] > 0 and all(m.get("status") == 200 for m in result["mismatches"]), result
    return [m["qid"] for m in result["mismatches"]]


def test_the_endpoint_serves_what_was_evaluated(served):
    base, run = served
    assert mismatches(f"{base}/exact", run) == []
    with urllib.request.urlopen(f"{base}/exact/healthz", timeout=30) as resp:
        health = json.loads(resp.read())
    report = json.loads(open(run.path("evaluate/report.json")).read())
    assert health["overrides"] == {} and health["settings"] == report["inference"]


@pytest.mark.parametrize("drift", [d for d in DRIFTS if d != "exact"])
def test_a_drifted_setting_is_caught(served, drift):
    base, run = served
    assert mismatches(f"{base}/{drift}", run), f"{drift} changed nothing the parity check sees"


def test_parity_sees_generation_not_only_passages(served):
    """The tiny student must say something, or the generation half of the comparison could never fail."""
    _, run = served
    rows = pq.read_table(run.path("evaluate/predictions.parquet")).to_pylist()
    assert any(len(r["generation"].split()) > 3 for r in rows if r["method"] == "kard_reranker")
