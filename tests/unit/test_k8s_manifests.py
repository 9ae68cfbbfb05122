"""Every manifest in k8s/ against KubeRay's own CRD schema, the pinned Ray, and the planner.

The schema is the CRD's ``openAPIV3Schema`` (tests/fixtures/kuberay, with its license). The
API server prunes unknown fields silently; here they are errors, as with
``kubectl apply --validate=strict``, so a misspelt field cannot pass.
"""

from __future__ import annotations

import copy
import json
import re
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml

from selfevo.config import load_config
from selfevo.planner import plan

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "fixtures" / "kuberay"
MANIFESTS = sorted((ROOT / "k8s").glob("*.yaml"))
RAY_VERSION = version("ray")
KUBERAY_KINDS = {"RayJob": "rayjob.v1.schema.json", "RayCluster": "raycluster.v1.schema.json"}


def _strict(node):
    """Close every object schema that lists its properties, like ``--validate=strict``."""
    if isinstance(node, dict):
        node = {key: _strict(value) for key, value in node.items()}
        closed = "properties" in node and "additionalProperties" not in node
        if closed and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(value) for value in node]
    return node


def _validator(kind: str) -> jsonschema.Draft7Validator:
    schema = _strict(json.loads((SCHEMAS / KUBERAY_KINDS[kind]).read_text()))
    return jsonschema.Draft7Validator(schema)


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _pod_specs(doc: dict) -> list[dict]:
    spec = _cluster_spec(doc)
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [group["template"]["spec"] for group in groups]


def _ray_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in MANIFESTS for d in _documents(p) if d["kind"] in KUBERAY_KINDS]


def test_there_are_cpu_8b_and_70b_jobs_and_a_cluster():
    kinds = [doc["kind"] for _, doc in _ray_docs()]
    assert kinds.count("RayJob") >= 3 and "RayCluster" in kinds
    entrypoints = " ".join(d["spec"]["entrypoint"] for _, d in _ray_docs() if d["kind"] == "RayJob")
    for configs in ("demo", "recipes/self_math scale/llama3_8b_1x8", "scale/llama3_70b_4x8"):
        assert configs in entrypoints


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kuberay_crd(path):
    for doc in _documents(path):
        if doc["kind"] not in KUBERAY_KINDS:
            assert doc["kind"] == "PersistentVolumeClaim", f"{path.name}: unexpected {doc['kind']}"
            continue
        errors = sorted(_validator(doc["kind"]).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_strict_validator_rejects_a_misspelt_field_and_a_wrong_type():
    _, doc = next((p, d) for p, d in _ray_docs() if d["kind"] == "RayJob")
    misspelt = copy.deepcopy(doc)
    misspelt["spec"]["shutdownAfterJobFinish"] = misspelt["spec"].pop("shutdownAfterJobFinishes")
    assert any(
        "shutdownAfterJobFinish" in e.message for e in _validator("RayJob").iter_errors(misspelt)
    )
    wrong_type = copy.deepcopy(doc)
    wrong_type["spec"]["backoffLimit"] = "one"
    assert list(_validator("RayJob").iter_errors(wrong_type))


@pytest.mark.parametrize(("path", "doc"), _ray_docs(), ids=lambda v: getattr(v, "name", ""))
def test_ray_version_and_image_tags_match_the_pinned_ray(path, doc):
    pin = re.search(r'"ray\[[^\]]*\]>=([\d.]+),<([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin and pin.group(1) <= RAY_VERSION < pin.group(2)
    assert _cluster_spec(doc)["rayVersion"] == RAY_VERSION
    for pod in _pod_specs(doc):
        for container in pod["containers"]:
            tag = container["image"].rsplit(":", 1)[1]
            assert re.fullmatch(rf"{re.escape(RAY_VERSION)}-py3\d+(-gpu)?", tag), container["image"]
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text()
    assert f"rayproject/ray:{RAY_VERSION}-py" in dockerfile


@pytest.mark.parametrize(("path", "doc"), _ray_docs(), ids=lambda v: getattr(v, "name", ""))
def test_pods_have_shm_shared_volume_and_gpu_tolerations(path, doc):
    for pod in _pod_specs(doc):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert "persistentVolumeClaim" in volumes["shared"]
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/dev/shm"] == "dshm" and mounts["/mnt/selfevo"] == "shared"
            gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu", 0)
            if gpus:
                tolerations = pod.get("tolerations", [])
                assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
            for env in container.get("env", []):
                assert "value" not in env or "KEY" not in env["name"], "keys come from Secrets"


def test_jobs_shut_down_and_retry_and_write_to_the_shared_volume():
    for _, doc in _ray_docs():
        if doc["kind"] != "RayJob":
            continue
        spec = doc["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["backoffLimit"] >= 1
        assert "run.output_dir=/mnt/selfevo/runs" in spec["entrypoint"]


@pytest.mark.parametrize(
    ("manifest", "config"),
    [
        ("rayjob-self-8b-1x8.yaml", "scale/llama3_8b_1x8"),
        ("rayjob-self-70b-4x8.yaml", "scale/llama3_70b_4x8"),
    ],
)
def test_gpu_jobs_give_the_plan_the_gpus_it_places(manifest, config):
    (doc,) = _documents(ROOT / "k8s" / manifest)
    entrypoint = doc["spec"]["entrypoint"].split()
    assert entrypoint[:4] == ["selfevo", "run", "recipes/self_math", config]
    result = plan(load_config(["recipes/self_math", config]))
    assert result.fits, result.problems
    (group,) = _cluster_spec(doc)["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert (group["replicas"], gpus) == (result.num_nodes, result.gpus_per_node)
