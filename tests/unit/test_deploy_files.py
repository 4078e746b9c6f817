"""The deploy files parse against their schemas (offline) and the image build file is linted.

No Docker engine or cluster is needed: the compose file is checked against the Compose
specification's JSON schema (vendored by check-jsonschema), the Kubernetes manifests
against the API's OpenAPI schemas (shipped by kubernetes-validate), the Dockerfile by
hadolint and a few structural rules, the dashboards for the datasource they name.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.unit
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _tool(name):
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed beside {sys.executable}; install the dev extra")
    return found


def _run(*command):
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_compose_file_matches_the_compose_specification():
    result = _run(
        _tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(DEPLOY / "compose.yaml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_two_streamers_with_distinct_instance_ids_and_pinned_images():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    streamers = {n: s for n, s in services.items() if s.get("command") == ["streamer", "run"]}
    ids = {s["environment"]["STREAMER_INSTANCE_ID"] for s in streamers.values()}
    assert len(streamers) == 2 and len(ids) == 2
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is not pinned"
    for name in ("kafka", "prometheus", "grafana", "trainer"):
        assert name in services
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in published), published


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_matches_the_api_schema(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


def _kinds():
    return {
        d["kind"]: d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d is not None
    }


def test_streamer_probes_use_the_health_endpoints_and_secrets_come_from_a_secret():
    kinds = _kinds()
    pod = kinds["StatefulSet"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    secret = kinds["Secret"]
    assert "STREAMER_SASL_PASSWORD" in secret["stringData"]
    refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    assert refs == [secret["metadata"]["name"]]
    assert "PASSWORD" not in json.dumps(kinds["ConfigMap"]["data"]).upper()
    assert kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ][:2] == ["trainer", "fit"]


def test_dockerfile_passes_hadolint():
    result = _run(_tool("hadolint"), str(DEPLOY / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_its_base_and_runs_as_a_non_root_user():
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    bases = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "latest" not in " ".join(lines)


def test_dashboards_use_the_provisioned_datasource():
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = source["datasources"][0]["uid"]
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == uid, (path.name, panel["title"])
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
