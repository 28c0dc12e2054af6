"""The image, the compose file and the Kubernetes manifests say only what is true of the sink.

Read as text and YAML, with no Docker engine and no cluster: the Dockerfile's instructions
(stages, user, health check, labels, what it copies and how it installs), the compose file's
services and their order, and the manifests' settings, ports, probe paths, shutdown grace and
security context, held against the sink itself (consumer.settings, consumer.health, the CLI).
The built-in Kubernetes kinds are validated against the JSON schemas of pinned Kubernetes
versions (kubernetes-validate ships them); the custom resources (PodMonitor, ScaledObject)
have no schema here, so their fields are checked one by one. Last, the constraints file pins
every runtime dependency, each within pyproject.toml's bounds.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from typer.main import get_command

from consumer.cli import app
from consumer.health import HEALTH_PATHS, METRICS_PATH, HealthServer, Snapshot
from consumer.kafka import without_dlq
from consumer.metrics import Metrics
from consumer.replay.produce import parse
from consumer.settings import DEFAULT_TOPIC_PATTERN, Settings, known_variables, unknown_variables
from handlers.envelope import DecodeError, decode

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# The Kubernetes versions the manifests are validated against: 1.31, the oldest they are
# written for (namespace.yaml's enforce-version; the PodDisruptionBudget's
# unhealthyPodEvictionPolicy is GA from 1.31), and the newest whose schemas
# kubernetes-validate 1.37 ships.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
OLDEST_KUBERNETES = KUBERNETES_VERSIONS[0]

# Pod Security "restricted": the volume types it admits.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# KEDA's kafka trigger parameters (keda.sh/docs, "Apache Kafka" scaler).
KEDA_KAFKA_PARAMETERS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "partitionLimitation",
    "version",
    "sasl",
    "tls",
}
DEFAULT_HTTP_PORT = Settings.model_fields["http_port"].default
IMAGE_USER = 10001


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OMNISINK_"):
            monkeypatch.delenv(name)


# -- the Dockerfile ---------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continued lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # a comment, also inside a continued instruction, as Docker reads it
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        found.append((keyword.upper(), " ".join(arguments.split())))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return found


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, arguments))
    return stages


def _final_stage() -> list[tuple[str, str]]:
    return _stages()[-1]


def _arguments(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for k, arguments in stage if k == keyword]


def _healthcheck_command() -> list[str]:
    (healthcheck,) = _arguments(_final_stage(), "HEALTHCHECK")
    _, cmd, command = healthcheck.partition("CMD ")
    assert cmd, "HEALTHCHECK has no CMD"
    exec_form = json.loads(command)
    assert isinstance(exec_form, list), "HEALTHCHECK CMD in exec form (a JSON array)"
    return [str(word) for word in exec_form]


def test_the_image_is_built_in_stages() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    build = stages[0][0][1].split()
    assert [word.upper() for word in build[-2:-1]] == ["AS"], "the first stage is named"
    copied_from = [a for a in _arguments(stages[-1], "COPY") if a.startswith("--from=")]
    assert any(a.startswith(f"--from={build[-1]} ") for a in copied_from), (
        "the runtime stage copies what the build stage installed"
    )
    runs = _arguments(stages[-1], "RUN")
    assert all("pip install" not in run for run in runs), "nothing installed at run time"


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = _arguments(_final_stage(), "USER")
    assert users, "the runtime stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), "USER numeric: Kubernetes' runAsNonRoot can only check a number"
    assert int(user) == IMAGE_USER != 0
    assert not group or (group.isdigit() and int(group) != 0)
    assert _arguments(_final_stage(), "ENTRYPOINT") == ['["omnisink"]']


def test_the_healthcheck_asks_health_live_with_the_standard_library() -> None:
    command = _healthcheck_command()
    assert command[:2] == ["python", "-c"], "a python one-liner: slim images have no curl"
    code = command[2]
    assert "urllib.request" in code
    assert "/health/live" in code
    assert "/health/live" in HEALTH_PATHS
    default = re.search(r"os\.environ\.get\('OMNISINK_HTTP_PORT', '(\d+)'\)", code)
    assert default, "the port is OMNISINK_HTTP_PORT's"
    assert int(default.group(1)) == DEFAULT_HTTP_PORT


def _run_healthcheck(port: int) -> int:
    _, flag, code = _healthcheck_command()
    env = {**os.environ, "OMNISINK_HTTP_PORT": str(port)}
    # The Dockerfile's own command, run by this interpreter.
    done = subprocess.run(
        [sys.executable, flag, code], env=env, capture_output=True, timeout=60, check=False
    )
    return done.returncode


def test_the_healthcheck_passes_on_a_live_sink_and_fails_otherwise() -> None:
    """The Dockerfile's command, run against the sink's own health server."""
    snapshot = Snapshot(beat_at=time.monotonic())
    server = HealthServer(Metrics(), lambda: snapshot, "127.0.0.1", 0)
    server.start()
    try:
        assert _run_healthcheck(server.port) == 0
        snapshot = Snapshot(beat_at=time.monotonic(), stopping=True)  # /health/live is 503
        assert _run_healthcheck(server.port) == 1
    finally:
        server.stop()
    assert _run_healthcheck(server.port) == 1, "nothing listening"


def test_the_image_has_oci_labels() -> None:
    labels = " ".join(_arguments(_final_stage(), "LABEL"))
    keys = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", labels))
    assert {
        f"org.opencontainers.image.{key}"
        for key in ("title", "description", "version", "revision", "licenses")
    } <= keys
    assert not set(re.findall(r"(\S+)=", labels)) - keys, "every label is an OCI one"
    version = [a for a in _arguments(_final_stage(), "ARG") if a.startswith("VERSION=")]
    assert version == [f"VERSION={PYPROJECT['project']['version']}"], (
        "the image's version label defaults to the package's version"
    )


def _copied_sources() -> set[str]:
    copied: set[str] = set()
    for stage in _stages():
        for arguments in _arguments(stage, "COPY"):
            words = arguments.split()
            if any(w.startswith("--from") for w in words):
                continue  # from another stage, not from the build context
            paths = [w for w in words if not w.startswith("--")]
            copied.update(w.rstrip("/") for w in paths[:-1])
    return copied


def test_the_image_ships_no_dev_tooling_nor_tests() -> None:
    copied = _copied_sources()
    assert copied, "the Dockerfile copies nothing from the build context"
    assert not copied & {"dev", "tests", "docs", "deploy", ".", "alembic.ini"}, sorted(copied)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"dev", "tests"} <= ignored, "the build context leaves out dev/ and tests/"
    assert "[dev]" not in DOCKERFILE.read_text(), "no dev extras in the image"


def test_the_image_copies_every_package_and_what_the_build_reads() -> None:
    packages = {
        pattern.rstrip("*")
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    needed = packages | {"pyproject.toml", PYPROJECT["project"]["readme"], "constraints.txt"}
    assert needed <= _copied_sources(), f"the build misses {sorted(needed - _copied_sources())}"


def test_the_image_installs_with_the_constraints_file() -> None:
    installs = [
        run
        for stage in _stages()
        for run in _arguments(stage, "RUN")
        if re.search(r"\bpip\b.*\binstall\b", run) and "uninstall" not in run
    ]
    assert installs, "the Dockerfile installs the package"
    for run in installs:
        assert re.search(r"(--constraint|-c) constraints\.txt\b", run), run


def test_make_install_uses_the_constraints_file() -> None:
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(VENV\)/\.installed:(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert rule, "the Makefile's install rule"
    assert "constraints.txt" in rule.group(1).split(), "reinstalls when the pins change"
    pip_installs = [line for line in rule.group(2).splitlines() if "-e '.[dev]'" in line]
    assert pip_installs
    assert all("--constraint constraints.txt" in line for line in pip_installs)


# -- settings, as the compose file and the manifests give them ---------------------------------


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The sink's settings with exactly ``env``; no variable in it may be unknown."""
    unknown = unknown_variables(env)
    assert not unknown, f"not settings: {unknown}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        return Settings()
    finally:
        for name in env:
            monkeypatch.delenv(name)


def _named_variables(text: str) -> set[str]:
    return set(re.findall(r"\bOMNISINK_[A-Z0-9_]+", text))


@pytest.mark.parametrize("path", [COMPOSE, *MANIFESTS], ids=lambda p: p.name)
def test_every_omnisink_variable_named_is_a_setting(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path.name} is empty"
    unknown = _named_variables(path.read_text()) - known_variables()
    assert not unknown, f"{path.name} names {sorted(unknown)}, which the sink does not read"


# -- deploy/docker-compose.yml ----------------------------------------------------------------


def _compose() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(compose, dict)
    return compose


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _omnisink_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _services().items()
        if service.get("build", {}).get("dockerfile") == "Dockerfile"
    }


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, f"not a compose duration: {duration}"
    assert "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_runs_kafka_in_kraft_mode_and_postgres_15() -> None:
    services = _services()
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"].split(",")
    assert not any("zookeeper" in str(value).lower() for value in env.values())
    assert not any("zookeeper" in name for name in services)
    # kafka-storage format takes a cluster id of 16 bytes, base64url without padding.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert "healthcheck" in kafka
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == "15"
    assert "healthcheck" in services["postgres"]


def test_compose_migrates_before_the_sink_starts() -> None:
    services = _services()
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    sink = services["sink"]
    assert sink["command"] == ["run"]
    assert sink["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert sink["depends_on"]["kafka"]["condition"] == "service_healthy"
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for name, service in _omnisink_services().items():
        assert service["command"][0] in commands, f"{name}: no `omnisink {service['command']}`"


def test_compose_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in _omnisink_services().items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert all(k.startswith("OMNISINK_") for k in env), name
        _settings_from(env, monkeypatch)


def test_compose_sink_health_port_and_shutdown_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _services()["sink"]
    settings = _settings_from({k: str(v) for k, v in sink["environment"].items()}, monkeypatch)
    test = sink["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{settings.http_port}/health/live" in test[3]
    published = [str(port).rsplit(":", 1)[-1] for port in sink["ports"]]
    assert str(settings.http_port) in published
    # Docker's default stop timeout is 10 s: shorter than the grace, the batch would be killed.
    assert _seconds(sink["stop_grace_period"]) > settings.shutdown_grace_s
    for name in ("migrate", "producer"):
        assert _services()[name]["healthcheck"] == {"disable": True}, (
            f"{name} serves no /health/live: the image's check would mark it unhealthy"
        )


def _sample_lines() -> Iterator[tuple[int, str]]:
    producer = _services()["producer"]
    command = producer["command"]
    assert command[0] == "produce"
    (mount,) = producer["volumes"]
    source, target, *_ = mount.split(":")
    assert target == command[1], "the producer reads the file mounted for it"
    path = (COMPOSE.parent / source).resolve()
    assert path.parent == COMPOSE.parent, "the sample lives in deploy/"
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if text.strip():
            yield number, text


def test_the_sample_is_producer_traffic_and_one_dead_letter() -> None:
    """Every line is one `omnisink produce` reads, on a topic the sink subscribes to by
    default; every value is an envelope the sink decodes but the last, the one dead letter
    the compose file's comment promises."""
    lines = list(_sample_lines())
    assert len(lines) >= 10
    subscription = re.compile(without_dlq(DEFAULT_TOPIC_PATTERN))
    kinds = []
    for number, text in lines:
        line = parse(number, text, None)
        assert subscription.fullmatch(line.topic), f"line {number}: {line.topic}"
        try:
            decode(line.value, max_bytes=Settings.model_fields["max_message_bytes"].default)
        except DecodeError as exc:
            kinds.append((number, exc.kind))
    assert kinds == [(lines[-1][0], "schema")]


# -- deploy/kubernetes ------------------------------------------------------------------------


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kinds() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in _documents(path):
            assert doc["kind"] not in found, f"a second {doc['kind']}: {path.name}"
            found[doc["kind"]] = doc
    return found


def _statefulset() -> dict[str, Any]:
    return _kinds()["StatefulSet"]


def _pod() -> dict[str, Any]:
    pod = _statefulset()["spec"]["template"]["spec"]
    assert isinstance(pod, dict)
    return pod


def _containers() -> list[dict[str, Any]]:
    return [*_pod().get("initContainers", []), *_pod()["containers"]]


def _sink() -> dict[str, Any]:
    (sink,) = [c for c in _pod()["containers"] if c.get("args") == ["run"]]
    return sink


def _secret_files() -> dict[str, str]:
    """The example Secret's keys, each a file of the mounted secret volume."""
    secret = _kinds()["Secret"]
    return {str(k): str(v) for k, v in secret["stringData"].items()}


def _container_env(container: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """What a container's environment holds: the ConfigMap, then its own env (a field
    reference as the pod's name; a mounted secret file as a file here, with the example's
    content)."""
    env: dict[str, str] = {}
    configmap = _kinds()["ConfigMap"]
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
        env.update({str(k): str(v) for k, v in configmap["data"].items()})
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    for variable in container.get("env", []):
        if "valueFrom" in variable:
            assert variable["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[variable["name"]] = f"{_statefulset()['metadata']['name']}-0"
        elif variable["name"].endswith("_FILE"):
            directory, _, key = variable["value"].rpartition("/")
            assert directory in mounts, f"{variable['value']} is on no mounted volume"
            copy = tmp_path / key
            copy.write_text(_secret_files()[key] + "\n")
            env[variable["name"]] = str(copy)
        else:
            env[variable["name"]] = str(variable["value"])
    return env


def test_every_manifest_is_named_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert all((KUBERNETES / name).is_file() for name in listed)
    assert listed == {p.name for p in MANIFESTS} - {"kustomization.yaml", "secret.example.yaml"}
    for path in MANIFESTS:
        for doc in _documents(path):
            assert {"apiVersion", "kind"} <= set(doc), path.name
            assert doc["kind"] == "Kustomization" or doc["metadata"]["name"], path.name


def _builtin_documents() -> list[Any]:
    """Every document of a built-in kind (the custom resources have no schema here)."""
    custom = {"Kustomization", "PodMonitor", "ScaledObject"}
    return [
        pytest.param(doc, id=f"{path.name}:{doc['kind']}")
        for path in MANIFESTS
        for doc in _documents(path)
        if doc["kind"] not in custom
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", _builtin_documents())
def test_builtin_kinds_pass_the_kubernetes_json_schemas(version: str, doc: dict[str, Any]) -> None:
    """Strict schemas: an unknown field (a typo) fails as a wrong type does."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="the dev extras bring kubernetes-validate"
    )
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_namespace_enforces_pod_security_restricted() -> None:
    labels = _kinds()["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    major, minor, _ = OLDEST_KUBERNETES.split(".")
    assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{major}.{minor}"


def test_settings_in_the_pods_are_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for container in _containers():
        _settings_from(_container_env(container, tmp_path), monkeypatch)
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert all(c["args"][0] in commands for c in _containers())


def test_the_database_url_comes_from_the_secret_as_a_file(tmp_path: Path) -> None:
    secret_volumes = {
        v["name"]: v["secret"]["secretName"] for v in _pod()["volumes"] if "secret" in v
    }
    assert set(secret_volumes.values()) == {_kinds()["Secret"]["metadata"]["name"]}
    assert "OMNISINK_DATABASE_URL" not in _kinds()["ConfigMap"]["data"]
    for container in _containers():
        names = {v["name"] for v in container.get("env", [])}
        assert "OMNISINK_DATABASE_URL" not in names, "the URL carries the password"
        (url_file,) = [
            v["value"] for v in container["env"] if v["name"] == "OMNISINK_DATABASE_URL_FILE"
        ]
        directory = url_file.rpartition("/")[0]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
        assert mount["name"] in secret_volumes
        assert mount.get("readOnly") is True
        assert _container_env(container, tmp_path)["OMNISINK_DATABASE_URL_FILE"]


def test_migrations_run_before_the_sink_from_the_same_image() -> None:
    (migrate,) = [c for c in _pod().get("initContainers", []) if c.get("args") == ["migrate"]]
    assert migrate["image"] == _sink()["image"], "the migrations of the sink's own version"
    text = (KUBERNETES / "statefulset.yaml").read_text()
    assert re.search(r"^# Migrations: .*init container", text, re.MULTILINE), "say why"


def test_probes_use_the_sinks_paths_and_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sink = _sink()
    settings = _settings_from(_container_env(sink, tmp_path), monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in sink["ports"]}
    assert ports == {"http": settings.http_port}
    assert settings.http_port == DEFAULT_HTTP_PORT
    live, ready = sink["livenessProbe"]["httpGet"], sink["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/health/live", "/health/ready")
    assert {live["path"], ready["path"]} <= set(HEALTH_PATHS)
    assert live["port"] == ready["port"] == "http"
    (endpoint,) = _kinds()["PodMonitor"]["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", METRICS_PATH)


def test_termination_grace_outlasts_the_shutdown_grace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _settings_from(_container_env(_sink(), tmp_path), monkeypatch)
    grace = _pod()["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_grace_s
    probe = _sink()["livenessProbe"]
    # A stopping sink answers 503 on /health/live: no restart for it before the grace ends.
    assert probe["periodSeconds"] * probe["failureThreshold"] >= grace


def test_pods_pass_pod_security_restricted() -> None:
    """The "restricted" profile's rules (kubernetes.io/docs/concepts/security/
    pod-security-standards), checked here as its admission controller would."""
    pod = _pod()
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all(set(v) - {"name"} <= RESTRICTED_VOLUMES for v in pod.get("volumes", []))
    context = pod.get("securityContext", {})
    assert context.get("runAsUser") == IMAGE_USER, "the image's USER"
    for container in _containers():
        own = container.get("securityContext", {})
        name = container["name"]
        assert own.get("allowPrivilegeEscalation") is False, name
        assert not own.get("privileged"), name
        assert "ALL" in own.get("capabilities", {}).get("drop", []), name
        assert set(own.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, name
        assert own.get("runAsNonRoot", context.get("runAsNonRoot")) is True, name
        assert own.get("runAsUser", context.get("runAsUser")) not in (None, 0), name
        seccomp = own.get("seccompProfile", context.get("seccompProfile", {}))
        assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, name
        assert own.get("readOnlyRootFilesystem") is True, name
        assert not any(p.get("hostPort") for p in container.get("ports", [])), name
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "Service links set OMNISINK_*_PORT variables"


def test_the_headless_service_is_the_statefulsets() -> None:
    service = _kinds()["Service"]
    assert _statefulset()["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    labels = _statefulset()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {"http"}
    assert _statefulset()["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_disruption_budget_and_monitor_select_the_pods() -> None:
    labels = _statefulset()["spec"]["template"]["metadata"]["labels"]
    budget = _kinds()["PodDisruptionBudget"]
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in budget["spec"] or "minAvailable" in budget["spec"]
    monitor = _kinds()["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector"}


def test_keda_scales_on_the_sinks_own_group_and_brokers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No schema for KEDA's CRD here: its fields, one by one."""
    scaled = _kinds()["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": _statefulset()["metadata"]["name"],
    }
    assert "replicas" not in _statefulset()["spec"], "the HPA owns the count"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert set(metadata) <= KEDA_KAFKA_PARAMETERS
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA's metadata is strings"
    settings = _settings_from(_container_env(_sink(), tmp_path), monkeypatch)
    assert metadata["consumerGroup"] == settings.group_id
    assert metadata["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert metadata["offsetResetPolicy"] == settings.auto_offset_reset
    assert metadata["allowIdleConsumers"] == "false"


def test_the_replica_cap_says_why_it_is_the_partition_count() -> None:
    lines = (KUBERNETES / "scaledobject.yaml").read_text().splitlines()
    (at,) = [n for n, line in enumerate(lines) if line.strip().startswith("maxReplicaCount:")]
    comment = []
    for line in reversed(lines[:at]):
        if not line.strip().startswith("#"):
            break
        comment.append(line)
    assert "partitions" in " ".join(comment)


# -- docs/operations.md's alerts --------------------------------------------------------------


def _series() -> dict[str, set[str]]:
    """Every series name the sink exports, with its labels."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    series: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        kind = getattr(metric, "_type", None)
        if kind in suffixes:
            labels = set(metric._labelnames)
            for suffix in suffixes[kind]:
                series[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def test_the_alerts_name_only_series_and_labels_the_sink_exports() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    series = _series()
    named = re.findall(r"\b(omnisink_[a-z_]+)(\{[^}]*\})?", text)
    assert {name for name, _ in named} >= {
        "omnisink_consumer_lag",
        "omnisink_consumer_lag_seconds",
        "omnisink_circuit_breaker_state",
        "omnisink_dead_letters_total",
        "omnisink_transient_errors_total",
        "omnisink_last_commit_timestamp_seconds",
    }
    for name, matchers in named:
        assert name in series, f"docs/operations.md: the sink exports no {name}"
        labels = set(re.findall(r"(\w+)\s*=~?", matchers))
        assert labels <= series[name], f"docs/operations.md: {name} has no label {labels}"


# -- dependencies -----------------------------------------------------------------------------


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not name==version"
        assert canonicalize_name(name) not in pins, f"constraints.txt: {name} twice"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _runtime() -> list[Requirement]:
    return [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]


def _closure() -> dict[str, list[Requirement]]:
    """Every package the runtime dependencies bring, with what asks for it, read from the
    installed packages' metadata (markers evaluated, extras followed)."""
    found: dict[str, list[Requirement]] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = _runtime()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        found.setdefault(name, []).append(requirement)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        for text in importlib.metadata.requires(requirement.name) or []:
            sub = Requirement(text)
            extras = requirement.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return found


def test_runtime_dependencies_have_a_floor_and_a_cap_below_the_next_major() -> None:
    for requirement in _runtime():
        bounds = {spec.operator: Version(spec.version) for spec in requirement.specifier}
        assert set(bounds) == {">=", "<"}, f"{requirement}: a floor and a cap"
        floor, cap = bounds[">="], bounds["<"]
        # 0.x: a minor may break (semantic versioning's item 4), so the cap is the next minor.
        limit = Version(f"{floor.major + 1}") if floor.major else Version(f"0.{floor.minor + 1}")
        assert floor < cap <= limit, f"{requirement}: cap at most {limit}"


def test_typer_floor_is_past_the_broken_releases() -> None:
    """0.12.0-0.12.3 crash; 0.12.4-0.12.5 pass --until-caught-up as None."""
    (typer,) = [r for r in _runtime() if r.name == "typer"]
    assert not any(typer.specifier.contains(f"0.12.{n}") for n in range(6))


def test_constraints_pin_every_runtime_dependency_within_its_bounds() -> None:
    pins = _pins()
    for name, asked in sorted(_closure().items()):
        assert name in pins, f"constraints.txt does not pin {name} (asked by {asked[0]})"
        for requirement in asked:
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"constraints.txt pins {name}=={pins[name]}, outside {requirement}"
            )
        installed = Version(importlib.metadata.version(name))
        assert installed == pins[name], (
            f"the suite runs with {name} {installed}, the image gets {pins[name]}: "
            "regenerate constraints.txt (its header says how)"
        )


def test_constraints_pin_every_dev_dependency_within_its_bounds() -> None:
    pins = _pins()
    for text in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), requirement
