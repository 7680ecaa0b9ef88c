"""Cluster launcher, KubeRay manifests and the Serve config: what can be checked without a cluster."""

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

CLUSTER = REPO / "cluster"


def ray_pin() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'"ray\[[^\]]*\]==([\d.]+)"', text).group(1)


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", sorted([*CLUSTER.rglob("*.yaml"), REPO / "serve" / "config.yaml"]),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_loads_and_names_the_pinned_ray(path):
    doc = load(path)
    assert isinstance(doc, dict) and doc
    for version in re.findall(r"rayVersion: \"?([\d.]+)", path.read_text()):
        assert version == ray_pin()
    for image in re.findall(r"image: (\S+)", path.read_text()):
        assert ray_pin() in image, f"{path.name}: image {image} does not carry ray {ray_pin()}"


def test_kuberay_manifests_have_their_required_keys():
    cluster = load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["apiVersion"] == "ray.io/v1"
    assert {"headGroupSpec", "workerGroupSpecs"} <= set(cluster["spec"])
    gpu = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"][0]
    assert gpu["minReplicas"] <= gpu["maxReplicas"]
    assert "nvidia.com/gpu" in gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    job = load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("python -m jobs run")
    assert "rayClusterSpec" in job["spec"] and job["spec"]["shutdownAfterJobFinishes"] is True


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
        scaling = d.get("autoscaling_config")
        if scaling:
            assert scaling["min_replicas"] <= scaling["max_replicas"]


def test_launcher_config_installs_this_package_and_autoscales():
    launcher = load(CLUSTER / "cluster.yaml")
    assert launcher["head_node_type"] in launcher["available_node_types"]
    gpu = launcher["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] <= gpu["max_workers"] <= launcher["max_workers"]
    assert any("pip install" in c and "kard-ray" in c for c in launcher["setup_commands"])
    assert f"ray[train,serve,data]=={ray_pin()}" in " ".join(launcher["setup_commands"])
