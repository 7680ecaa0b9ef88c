"""Image recipe, cluster launcher, KubeRay manifests, cluster configs and the Serve config: what can be
checked without a cluster. The manifests are validated against KubeRay's own CRD schemas."""

import importlib.util
import json
import re
import shlex
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import REPO

CLUSTER = REPO / "cluster"
MANIFESTS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
CRDS = REPO.parent / "shared" / "kuberay" / "crds"
DOCS = REPO / "docs" / "cluster.md"
GPU = "nvidia.com/gpu"


def pin(package: str) -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(rf'"{package}(?:\[[^\]]*\])?==([\d.]+)"', text).group(1)


def ray_pin() -> str:
    return pin("ray")


def recipe_tag() -> str:
    """The tag the Dockerfile is built as: project version and Ray version, so a bump of either shows."""
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    return f"ghcr.io/kard-ray/kard-ray:{version}-ray{ray_pin()}"


def load(path: Path):
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def cluster_spec(doc: dict) -> dict:
    """The Ray cluster spec of a RayCluster, or the one a RayJob or RayService embeds."""
    return doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig") or doc["spec"]


def groups(doc: dict):
    """(group spec, its one Ray container) for the head and every worker group."""
    spec = cluster_spec(doc)
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        (container,) = group["template"]["spec"]["containers"]
        yield group, container


def has_gpu(container: dict) -> bool:
    return GPU in container.get("resources", {}).get("limits", {})


# --------------------------------------------------------------------------- strict CRD validation


def strict(schema: dict) -> dict:
    """A CRD's structural schema as JSON Schema that also refuses what the API server would prune: a
    field an object does not list, unless it keeps unknown fields."""
    subschemas = ("properties", "items", "additionalProperties", "anyOf")
    out = {k: v for k, v in schema.items() if k not in subschemas and not k.startswith("x-kubernetes-")}
    props = dict(schema.get("properties", {}))
    if schema.get("x-kubernetes-embedded-resource"):  # apiVersion, kind and metadata are implied
        props = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                 **props}
    if props:
        out["properties"] = {name: strict(sub) for name, sub in props.items()}
    if "items" in schema:
        out["items"] = strict(schema["items"])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):  # a map: any keys, each value checked
        out["additionalProperties"] = strict(extra)
    elif extra is not None:
        out["additionalProperties"] = extra
    elif props and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]  # what its anyOf says
    elif "anyOf" in schema:
        out["anyOf"] = [strict(sub) for sub in schema["anyOf"]]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@lru_cache(maxsize=None)
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRD schemas not available: {CRDS} is absent")
    group, version = api_version.split("/")
    crd = load(CRDS / f"{group}_{kind.lower()}s.yaml")
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft202012Validator(strict(served["schema"]["openAPIV3Schema"]))


def crd_errors(doc: dict) -> list[str]:
    """Every place where the manifest breaks its CRD's schema (CEL rules are not evaluated)."""
    validator = crd_validator(doc["kind"], doc["apiVersion"])
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kuberay_crd_strictly(path):
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    assert crd_errors(doc) == []


def with_field(name: str, at: str, key: str, value) -> dict:
    """A manifest with ``key: value`` set in the object at the dotted path ``at`` (list items by index)."""
    doc = load(CLUSTER / "kuberay" / name)
    node = doc
    for step in at.split("."):
        node = node[int(step)] if isinstance(node, list) else node[step]
    node[key] = value
    return doc


@pytest.mark.parametrize("name, at, key, value, expected", [
    ("raycluster.yaml", "spec.headGroupSpec", "bogus", 1, "'bogus' was unexpected"),
    ("raycluster.yaml", "spec.workerGroupSpecs.0", "minReplicas", "one", "'one' is not of type 'integer'"),
    ("rayjob.yaml", "spec.rayClusterSpec.authOptions", "token", "x", "'token' was unexpected"),
    ("rayjob.yaml", "spec.rayClusterSpec.workerGroupSpecs.1.template.spec.containers.0", "imagePullPolicy", 3,
     "3 is not of type 'string'"),
    ("rayservice.yaml", "spec.rayClusterConfig.authOptions", "mode", "on", "'on' is not one of"),
])
def test_the_validator_rejects_unknown_fields_and_wrong_types(name, at, key, value, expected):
    errors = crd_errors(with_field(name, at, key, value))
    assert len(errors) == 1 and expected in errors[0], errors


def test_the_validator_accepts_int_or_string_quantities_and_maps_of_strings():
    limits = "spec.workerGroupSpecs.0.template.spec.containers.0.resources.limits"
    assert crd_errors(with_field("raycluster.yaml", limits, "cpu", 16)) == []  # 16 as well as "16"
    assert crd_errors(with_field("raycluster.yaml", limits, "cpu", "16 cores")) != []  # not a quantity
    assert crd_errors(with_field("raycluster.yaml", "spec.workerGroupSpecs.0.rayStartParams", "any-flag", "x")) == []
    assert crd_errors(with_field("raycluster.yaml", "spec.workerGroupSpecs.0.rayStartParams", "num-cpus", 4)) != []


# --------------------------------------------------------------------------- what every manifest must have


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_token_authentication_is_on_with_a_secret(path):
    auth = cluster_spec(load(path)).get("authOptions", {})
    assert auth.get("mode") == "token" and auth.get("secretName"), f"{path.name}: {auth}"
    version = tuple(int(n) for n in cluster_spec(load(path))["rayVersion"].split("."))
    assert version >= (2, 52), "KubeRay refuses token mode before Ray 2.52"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_cpu_and_gpu_worker_groups_keep_cpu_work_off_gpu_pods(path):
    doc = load(path)
    spec = cluster_spec(doc)
    pools = {"cpu": [], "gpu": []}
    for group in spec["workerGroupSpecs"]:
        pool = "gpu" if has_gpu(group["template"]["spec"]["containers"][0]) else "cpu"
        assert group["labels"] == {"kard-ray/pool": pool}  # what a label_selector can name
        assert group["minReplicas"] <= group["maxReplicas"]
        pools[pool].append(group)
    assert pools["cpu"] and pools["gpu"], f"{path.name}: needs a CPU and a GPU worker group"
    assert any(g["minReplicas"] >= 1 for g in pools["cpu"])  # a GPU-free node always exists
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["autoscalerOptions"]["version"] == "v2"
    for _, container in groups(doc):
        assert {"name": "RAY_scheduler_avoid_gpu_nodes", "value": "1"} in container["env"]


def secret_keys(doc) -> dict[str, set[str]]:
    """Every Secret a manifest reads, with the keys it reads by name (envFrom reads them all)."""
    found: dict[str, set[str]] = {cluster_spec(doc)["authOptions"]["secretName"]: {"auth_token"}}

    def walk(node):
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                found.setdefault(node["secretKeyRef"]["name"], set()).add(node["secretKeyRef"]["key"])
            if "secretRef" in node:
                found.setdefault(node["secretRef"]["name"], set())
            node = list(node.values())
        if isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def test_every_secret_a_manifest_reads_is_created_in_the_docs_with_its_keys():
    commands = dict(re.findall(r"kubectl create secret generic (\S+)((?:.*\\\n)*.*)", DOCS.read_text()))
    for path in MANIFESTS:
        for name, keys in secret_keys(load(path)).items():
            assert name in commands, f"{path.name} reads Secret {name}; docs/cluster.md does not create it"
            for key in keys:
                assert f"--from-literal={key}=" in commands[name], f"{path.name}: {name}/{key} is not created"


def uris_only(cfg) -> bool:
    paths = [cfg.run_dir, *cfg.data.split_paths().values(), *cfg.kb.paths]
    return len(paths) >= 3 and all(str(p).startswith("s3://") for p in paths)


def test_rayjob_runs_a_cluster_config_whose_data_kb_and_run_dir_are_on_s3():
    from kard_ray.config import load_config

    job = load(CLUSTER / "kuberay" / "rayjob.yaml")
    entrypoint = job["spec"]["entrypoint"]
    assert entrypoint.startswith("python -m jobs run") and "../shared" not in entrypoint
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    args = shlex.split(entrypoint)
    config = args[args.index("--config") + 1]
    assert config.startswith("configs/cluster/")
    # the job runs in the image's checkout, which is this repository
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"] == "/home/ray/kard-ray"
    assert "WORKDIR /home/ray/kard-ray" in (REPO / "Dockerfile").read_text()
    cfg = load_config(REPO / config)
    assert uris_only(cfg)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "cluster").glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_configs_load_and_read_everything_from_s3(path):
    from kard_ray.config import load_config

    cfg = load_config(path)
    assert uris_only(cfg), f"{path.name}: run_dir, data and kb must be s3:// URIs on a cluster"


# --------------------------------------------------------------------------- images and versions


def cluster_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", sorted([*CLUSTER.rglob("*.yaml"), REPO / "serve" / "config.yaml"]),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_loads_and_names_the_pinned_ray(path):
    doc = load(path)
    assert isinstance(doc, dict) and doc
    for version in re.findall(r"rayVersion: \"?([\d.]+)", path.read_text()):
        assert version == ray_pin()


def test_every_image_is_the_recipe_or_the_pinned_ray_image():
    allowed = re.compile(rf"^(rayproject/ray:{re.escape(ray_pin())}-[\w.-]+|{re.escape(recipe_tag())})$")
    named = []
    for path in cluster_files():
        named += [(path.name, i) for i in re.findall(r"\b(?:rayproject|ghcr\.io)/[\w./-]+:[\w.-]+", path.read_text())]
    named += [(path.name, i) for path in MANIFESTS for _, c in groups(load(path)) for i in [c["image"]]]
    assert named
    for where, image in named:
        assert allowed.match(image), f"{where}: {image} is neither {recipe_tag()} nor rayproject/ray:{ray_pin()}-*"


def test_the_recipe_builds_the_tag_the_manifests_name_on_the_pinned_ray():
    dockerfile = (REPO / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray_pin())}-py3\d+-gpu", base)
    assert f"torch=={pin('torch')}" in dockerfile
    assert f"docker build -t {recipe_tag()} ." in dockerfile
    assert f"docker build -t {recipe_tag()} ." in DOCS.read_text()
    assert ".venv" in (REPO / ".dockerignore").read_text().split()


def test_no_ray_ml_image_anywhere():
    # Ray stopped publishing rayproject/ray-ml after 2.49.
    paths = [*cluster_files(), *(REPO / "docs").rglob("*.md"), REPO / "README.md", REPO / "Dockerfile"]
    assert [p.name for p in paths if "ray-ml" in p.read_text()] == []


# --------------------------------------------------------------------------- launcher and Serve


def test_launcher_config_matches_rays_schema_and_turns_token_auth_on():
    launcher = load(CLUSTER / "cluster.yaml")
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])
    jsonschema.validate(launcher, json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text()))
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert launcher["docker"]["image"] == recipe_tag()
    options = launcher["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in options and "--env RAY_scheduler_avoid_gpu_nodes=1" in options
    # the token is a file from the launching machine, never a value in the repository
    assert launcher["file_mounts"] == {"/home/ray/.ray/auth_token": "~/.ray/auth_token"}
    assert not any("RAY_AUTH_TOKEN=" in p.read_text() for p in cluster_files())
    types = launcher["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    assert types["cpu_worker"]["min_workers"] >= 1 and types["gpu_worker"]["min_workers"] == 0
    assert types["gpu_worker"]["max_workers"] <= launcher["max_workers"]


def test_rayservice_embeds_serve_config_verbatim():
    service = load(CLUSTER / "kuberay" / "rayservice.yaml")
    assert service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == load(REPO / "serve" / "config.yaml")


def test_serve_config_matches_the_app():
    import serve.app as app

    config = load(REPO / "serve" / "config.yaml")
    (application,) = config["applications"]
    assert application["import_path"] == "serve.app:build_app"
    app.ServeAppArgs.model_validate(application["args"])  # unknown or mistyped args fail here
    names = {d["name"] for d in application["deployments"]}
    assert names == {"KardService", "Retriever", "RerankerModel", "Generator"}
    for d in application["deployments"]:
        assert hasattr(app, d["name"])
        if d["name"] == "KardService":  # the app places the ingress (on the head); options here would replace that
            assert "ray_actor_options" not in d and d["max_ongoing_requests"] >= 1024
        scaling = d.get("autoscaling_config")
        if scaling:
            assert scaling["min_replicas"] <= scaling["max_replicas"]


def test_serve_accepts_the_configs_builder(monkeypatch):
    """`serve deploy` (and a RayService) calls import_path's builder with the args dict, and only a builder of
    exactly one parameter is accepted: a second one, even optional, made every deploy fail (DEPLOY_FAILED)."""
    from ray import serve
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    import serve.app as app

    application = load(REPO / "serve" / "config.yaml")["applications"][0]
    _, name = application["import_path"].split(":")
    seen = []
    monkeypatch.setattr(app, "build_graph", lambda args: seen.append(args) or serve.deployment(lambda: None).bind())
    built = call_user_app_builder_with_args_if_necessary(getattr(app, name), application["args"])
    assert isinstance(built, serve.Application) and seen == [application["args"]]
