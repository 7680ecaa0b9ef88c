
import pytest

from kard_ray.config import ConfigError, KardConfig, config_hash, load_config, parse_override


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, KardConfig)
    assert cfg.retrieval.bm25.k1 == 1.5 and cfg.teacher.n == 10


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("student:\n  lr: 3.0e-4\n  method: rd\nretrieval:\n  bm25:\n    shards: 4\n")
    cfg = load_config(f, ["student.lr=1e-4", "retrieval.bm25.shards=8", "eval.recall_at=[1, 5]"])
    assert cfg.student.lr == pytest.approx(1e-4)
    assert cfg.student.method == "rd"
    assert cfg.retrieval.bm25.shards == 8
    assert cfg.eval.recall_at == [1, 5]


@pytest.mark.parametrize(
    "override, key",
    [
        ("student.lrr=0.1", "student.lrr"),
        ("studnet.lr=0.1", "studnet"),
        ("retrieval.bm25.k1=fast", "retrieval.bm25.k1"),
        ("student.method=distill", "student.method"),
        ("teacher.n=0", "teacher.n"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value)


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("kb:\n  chunking:\n    stratgy: paragraph\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "kb.chunking.stratgy" in str(err.value) and "unknown key" in str(err.value)
    assert str(f) in str(err.value)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="token_overlap"):
        load_config(None, ["kb.chunking.tokens_per_chunk=16", "kb.chunking.token_overlap=16"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("student.lr")
    with pytest.raises(ConfigError, match="student.lr is not a section"):
        load_config(None, ["student.lr=0.1", "student.lr.x=1"])


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_hash_is_stable_and_sensitive():
    a, b = load_config(), load_config()
    assert config_hash(a.student) == config_hash(b.student)
    c = load_config(None, ["student.lr=0.5"])
    assert config_hash(a.student) != config_hash(c.student)


def test_secrets_are_named_not_stored():
    cfg = load_config()
    assert cfg.teacher.api_key_env == "OPENAI_API_KEY"
    assert "api_key" not in cfg.teacher.model_dump()
