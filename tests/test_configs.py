"""Every shipped config loads into the typed schema (no unknown keys, no wrong types)."""

import pytest
from conftest import REPO

from kard_ray.config import load_config


@pytest.mark.parametrize("name", ["demo", "obqa", "strategyqa", "medqa"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.run_dir.startswith("runs/")
    if name != "demo":
        assert not cfg.teacher.reference and cfg.teacher.api_key_env == "OPENAI_API_KEY"
        assert cfg.student.model == "google/flan-t5-base" and cfg.student.family == "seq2seq"
