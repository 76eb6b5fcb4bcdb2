"""cluster/: launcher YAMLs valid for the pinned Ray, KubeRay manifests with the CRDs' required fields,
and a Dockerfile whose Ray and Python versions match the project's pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
REPO = CLUSTER.parent

# Required fields of the KubeRay v1 CRDs (ray-operator config/crd/bases, strictest of the 1.x releases).
RAYCLUSTER_REQUIRED = {"spec": ["headGroupSpec"], "headGroupSpec": ["rayStartParams", "template"],
                       "workerGroupSpec": ["groupName", "maxReplicas", "minReplicas", "rayStartParams", "template"],
                       "container": ["name", "image"]}


def _pinned_ray() -> str:
    lock = (REPO / "requirements-lock.txt").read_text()
    return re.search(r"^ray(?:\[[^\]]*\])?==([\d.]+)$", lock, re.M).group(1)


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(config))  # raises on schema errors
    types = config["available_node_types"]
    assert {"head", "cpu_worker", "gpu_worker"} <= set(types)
    for t in types.values():
        assert all(isinstance(v, int) for v in t["resources"].values()), "resources must be integers"
    assert types["gpu_worker"]["resources"]["GPU"] >= 1 and types["gpu_worker"]["min_workers"] == 0
    assert any("--shm-size" in o for o in config["docker"]["run_options"])
    text = (CLUSTER / name).read_text().lower()
    assert "secret" not in text and "aws_access_key" not in text


def _check_cluster_spec(spec: dict) -> None:
    for key in RAYCLUSTER_REQUIRED["spec"]:
        assert key in spec
    assert spec["rayVersion"] == _pinned_ray() and spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    for key in RAYCLUSTER_REQUIRED["headGroupSpec"]:
        assert key in head
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"cpu", "gpu"} <= set(groups)
    for g in groups.values():
        for key in RAYCLUSTER_REQUIRED["workerGroupSpec"]:
            assert key in g, f"{g.get('groupName')}: missing {key}"
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"]
    for pod in [head["template"], *[g["template"] for g in groups.values()]]:
        for c in pod["spec"]["containers"]:
            for key in RAYCLUSTER_REQUIRED["container"]:
                assert key in c
            assert c["resources"]["requests"] and c["resources"]["limits"]
    gpu = groups["gpu"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])


def test_kuberay_raycluster():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    _check_cluster_spec(doc["spec"])


def test_kuberay_rayjob_runs_the_encode_job():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    assert doc["spec"]["entrypoint"].startswith("python jobs/encode.py ")
    yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    _check_cluster_spec(doc["spec"]["rayClusterSpec"])


def test_dockerfile_matches_the_pins():
    text = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"ARG BASE=rayproject/ray:([\d.]+)-py(\d)(\d+)", text)
    assert base, "the base image must be a rayproject/ray tag"
    assert base.group(1) == _pinned_ray()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lo, hi = re.match(r">=(\d+\.\d+),<(\d+\.\d+)", project["requires-python"]).groups()
    py = (int(base.group(2)), int(base.group(3)))
    assert tuple(map(int, lo.split("."))) <= py < tuple(map(int, hi.split(".")))
    assert "-c requirements-lock.txt" in text
    assert f"ray[default,data,train,tune]=={_pinned_ray()}" in project["dependencies"]
