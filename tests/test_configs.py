"""Every shipped config, the cluster ones included, loads into the typed schema (no unknown keys, no wrong
types) and says what it is: offline configs use offline parts, API configs name their key's variable, cluster
configs keep every input and output on shared storage. (Their plans are checked in test_preflight.py.)"""

import pytest
from conftest import REPO

from kard_ray.config import load_config

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_shipped_configs_load_and_say_what_they_are(path):
    cfg = load_config(path)
    t = cfg.teacher
    if path.parent.name == "cluster":
        uris = [cfg.run_dir, *cfg.data.split_paths().values(), *cfg.kb.paths]
        assert all(u.startswith("s3://") for u in uris), uris
    else:
        assert cfg.run_dir.startswith("runs/")
    if "offline" in path.stem or path.stem == "demo":
        assert t.reference or t.source in ("annotations", "import")
        assert cfg.student.model in ("smollm2-135m-instruct", "tiny-t5")
    else:
        assert t.source == "api" and not t.reference and t.api_key_env == "OPENAI_API_KEY"
        assert cfg.student.model.startswith("google/flan-t5") and cfg.student.family == "seq2seq"


def test_every_config_is_covered():
    assert {p.stem for p in CONFIGS} >= {"demo", "obqa", "obqa-offline", "strategyqa", "strategyqa-offline", "medqa",
                                         "obqa-s3"}
