"""What can be checked of the deployment files without a Docker engine or a cluster: hadolint
on the Dockerfiles, the compose file against the compose specification's schema, the rendered
Kubernetes manifests (rendered by the real kustomize) against the Kubernetes schemas, and that
every EMBED_* variable they set is a real setting. The images themselves are built and started
by `make image-test` (tests/test_image.py)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import check_jsonschema
import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.conftest import ROOT
from tests.deploy_render import final_stage, render

DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.32"
SETTINGS = {f"EMBED_{name.upper()}" for name in Settings.model_fields}


def hadolint() -> str:
    return str(Path(sys.executable).parent / "hadolint")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_pass_hadolint(name: str) -> None:
    result = subprocess.run([hadolint(), str(ROOT / name)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_does_find_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nCMD python app.py\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3006" in result.stdout


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_non_root_with_a_health_check(name: str) -> None:
    stage = final_stage(ROOT / name)
    assert stage.user.split(":")[0] not in ("", "0", "root")
    assert stage.cmd == ["python", "-m", "service"]
    assert "/health" in " ".join(stage.healthcheck)
    assert set(k for k in stage.env if k.startswith("EMBED_")) <= SETTINGS


def compose_validator() -> jsonschema.protocols.Validator:
    vendor = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor"
    schema = json.loads((vendor / "compose-spec.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)  # type: ignore[no-any-return]


def test_compose_file_follows_the_compose_specification() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator = compose_validator()
    assert [e.message for e in validator.iter_errors(document)] == []
    broken = copy.deepcopy(document)
    broken["services"]["qdrant"]["restart_policy"] = "always"  # not a compose key
    assert list(validator.iter_errors(broken))


def test_compose_wires_the_sidecar_qdrant_prometheus_and_the_gpu_profile() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = document["services"]
    assert services["embeddings-gpu"]["profiles"] == ["gpu"]
    devices = services["embeddings-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("embeddings-cpu", "embeddings-gpu"):
        assert "model-cache:/cache" in services[name]["volumes"]
        assert set(services[name]["environment"]) <= SETTINGS
    assert services["app"]["environment"]["QDRANT_URL"] == "http://qdrant:6333"
    scrape = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["embeddings:8000"]


@pytest.mark.parametrize("layout", ["base", "overlays/gpu"])
def test_kubernetes_manifests_validate(layout: str) -> None:
    docs = render(K8S / layout)
    assert {d["kind"] for d in docs} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validation_does_reject_mistakes() -> None:
    deployment = next(d for d in render(K8S / "base") if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def test_kubernetes_deployment_is_what_the_service_needs() -> None:
    deployment, main = container(render(K8S / "base"))
    assert main["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/health"
    assert main["startupProbe"]["httpGet"]["path"] == "/ready"
    env = {e["name"]: e for e in main["env"]}
    assert set(env) <= SETTINGS
    pre_stop = int(main["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = int(env["EMBED_SHUTDOWN_TIMEOUT_S"]["value"]) + pre_stop
    assert drain < deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert {v["mountPath"] for v in main["volumeMounts"]} == {"/cache", "/tmp", "/data"}
    _, gpu = container(render(K8S / "overlays" / "gpu"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"] == "embedding-service:gpu"
    assert {e["name"]: e.get("value") for e in gpu["env"]}["EMBED_EXECUTION_PROVIDER"] == "cuda"
    assert {e["name"] for e in gpu["env"]} <= SETTINGS
