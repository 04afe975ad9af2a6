"""The kubernetes backend against a loopback server speaking the custom-objects REST API."""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from mlflow import MlflowClient

from michelangelo_mlflow._registry import register_model
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import ConfigurationError, PartialRegistrationError
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import BlackHole
from tests.helpers.registry import STRICT_SCHEMA, assert_strict_valid, unique
from tests.helpers.tls import ServerCertificate, server_certificate

TOKEN = "test-token"
_PATH = re.compile(
    r"^/apis/michelangelo\.api/v2/namespaces/(?P<ns>[^/]+)/models(?:/(?P<name>[^/?]+))?$"
)


class FakeKubernetes(ThreadingHTTPServer):
    """Kubernetes custom objects for models.michelangelo.api/v2, with RBAC and 409/404.

    With ``certificate`` it serves HTTPS only, as a real API server does.
    """

    def __init__(self, certificate: ServerCertificate | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.scheme = "http"
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate.cert_path, certificate.key_path)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.namespaces = {"ml-team"}
        self.allowed_verbs = {"create", "get"}
        self.fail_next_create: int | None = None
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.revision = 0

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubernetes

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("get")

    def do_POST(self) -> None:
        self._serve("create")

    def _serve(self, verb: str) -> None:
        status, body = self._answer(verb)
        self.server.requests.append((verb, self.path, status))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "status": "Failure", "reason": reason, "code": code,
                      "message": message}  # fmt: skip

    def _answer(self, verb: str) -> tuple[int, dict[str, Any]]:
        server = self.server
        match = _PATH.match(self.path.split("?")[0])
        # As Kubernetes' bearer token authenticator: the scheme in any case (the in-cluster
        # client sends "bearer").
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token != TOKEN:
            return self._status(401, "Unauthorized", "Unauthorized")
        if match is None:
            return self._status(404, "NotFound", "the server could not find the resource")
        namespace, name = match["ns"], match["name"]
        if verb not in server.allowed_verbs:
            return self._status(
                403,
                "Forbidden",
                f'models.michelangelo.api is forbidden: User "system:serviceaccount:{namespace}:'
                f'default" cannot {verb} resource "models" in API group "michelangelo.api" in '
                f'the namespace "{namespace}"',
            )
        if namespace not in server.namespaces:
            return self._status(404, "NotFound", f'namespaces "{namespace}" not found')
        if verb == "get":
            found = server.objects.get((namespace, name or ""))
            if found is None:
                return self._status(404, "NotFound", f'models.michelangelo.api "{name}" not found')
            return 200, found
        if server.fail_next_create is not None:
            code, server.fail_next_create = server.fail_next_create, None
            return self._status(code, "InternalError", "etcdserver: request timed out")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        errors = list(jsonschema.Draft7Validator(STRICT_SCHEMA).iter_errors(body))
        if errors:
            return self._status(422, "Invalid", f"Model is invalid: {errors[0].message}")
        key = (namespace, body["metadata"]["name"])
        if key in server.objects:
            return self._status(
                409, "AlreadyExists", f'models.michelangelo.api "{key[1]}" already exists'
            )
        server.revision += 1
        body["metadata"]["resourceVersion"] = str(server.revision)
        server.objects[key] = body
        return 201, body


def serve(server: FakeKubernetes) -> Iterator[FakeKubernetes]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def kube() -> Iterator[FakeKubernetes]:
    yield from serve(FakeKubernetes())


@pytest.fixture
def kubeconfig(kube: FakeKubernetes, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "loopback", "cluster": {"server": kube.url}}],
                "users": [{"name": "tester", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "test", "context": {"cluster": "loopback", "user": "tester"}}
                ],
                "current-context": "test",
            }
        )
    )
    return path


def settings_for(server: TrackingServer, kubeconfig: Path) -> Settings:
    return Settings(tracking_uri=server.url, kubeconfig=str(kubeconfig), namespace="ml-team")


def count_versions(server: TrackingServer, name: str) -> int:
    with mlflow_scope(Settings(tracking_uri=server.url)):
        return len(MlflowClient().search_model_versions(f"name = '{name}'"))


def test_auto_picks_kubernetes_with_a_kubeconfig_and_creates_the_model(
    tracking_server: TrackingServer, logged_model: Any, kube: FakeKubernetes, kubeconfig: Path
) -> None:
    name = unique()
    reg = register_model(
        logged_model, name, kind="regression", settings=settings_for(tracking_server, kubeconfig)
    )
    assert reg.michelangelo is not None
    assert reg.michelangelo.backend == "kubernetes"
    stored = kube.objects[("ml-team", f"{name}-1")]
    assert stored["metadata"]["resourceVersion"] == "1"
    stored["metadata"].pop("resourceVersion")
    assert_strict_valid(stored)
    assert [(verb, status) for verb, _, status in kube.requests] == [("create", 201)]
    assert kube.requests[0][1] == "/apis/michelangelo.api/v2/namespaces/ml-team/models"


def test_retry_after_a_crash_between_the_halves_leaves_one_version_and_one_object(
    tracking_server: TrackingServer, logged_model: Any, kube: FakeKubernetes, kubeconfig: Path
) -> None:
    name = unique()
    settings = settings_for(tracking_server, kubeconfig)
    kube.fail_next_create = 500
    with pytest.raises(PartialRegistrationError, match=r"\(500\)") as info:
        register_model(logged_model, name, settings=settings)
    assert info.value.mlflow_version == "1"
    assert kube.objects == {}
    register_model(logged_model, name, settings=settings)
    register_model(logged_model, name, settings=settings)  # and once more: 409, then get
    assert count_versions(tracking_server, name) == 1
    assert list(kube.objects) == [("ml-team", f"{name}-1")]
    assert [(verb, status) for verb, _, status in kube.requests] == [
        ("create", 500),
        ("create", 201),
        ("create", 409),
        ("get", 200),
    ]


@pytest.mark.parametrize("missing", ["create", "get"])
def test_forbidden_names_the_missing_rbac_verb(
    tracking_server: TrackingServer,
    logged_model: Any,
    kube: FakeKubernetes,
    kubeconfig: Path,
    missing: str,
) -> None:
    name = unique()
    settings = settings_for(tracking_server, kubeconfig)
    if missing == "get":
        register_model(logged_model, name, settings=settings)  # exists: the retry needs get
    kube.allowed_verbs.discard(missing)
    with pytest.raises(PartialRegistrationError, match="403") as info:
        register_model(logged_model, name, settings=settings)
    message = str(info.value)
    assert f"forbids verb '{missing}'" in message
    assert f"missing RBAC verb '{missing}'" in message
    assert "docs/registration.md" in message


def test_an_unknown_namespace_is_a_404_naming_the_namespace(
    tracking_server: TrackingServer, logged_model: Any, kube: FakeKubernetes, kubeconfig: Path
) -> None:
    with pytest.raises(PartialRegistrationError, match="no namespace 'elsewhere'"):
        register_model(
            logged_model,
            unique(),
            namespace="elsewhere",
            settings=settings_for(tracking_server, kubeconfig),
        )


def test_rejected_credentials_are_a_401_error(
    tracking_server: TrackingServer, logged_model: Any, kubeconfig: Path
) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "wrong"
    kubeconfig.write_text(yaml.safe_dump(config))
    with pytest.raises(PartialRegistrationError, match="rejected the credentials"):
        register_model(logged_model, unique(), settings=settings_for(tracking_server, kubeconfig))


def test_an_unreadable_kubeconfig_is_a_configuration_error(
    tracking_server: TrackingServer, logged_model: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.write_text("clusters: []\n")
    name = unique()
    with pytest.raises(ConfigurationError, match="could not load Kubernetes credentials"):
        register_model(logged_model, name, settings=settings_for(tracking_server, broken))
    assert count_versions(tracking_server, name) == 0


def test_register_timeout_bounds_a_kubernetes_call_that_never_returns(
    tracking_server: TrackingServer,
    logged_model: Any,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_REGISTER_TIMEOUT", "1")
    with BlackHole() as hole:  # accepts the connection, never answers
        config = yaml.safe_load(kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = hole.url
        kubeconfig.write_text(yaml.safe_dump(config))
        start = time.monotonic()
        with pytest.raises(PartialRegistrationError, match=hole.url):
            register_model(
                logged_model, unique(), settings=settings_for(tracking_server, kubeconfig)
            )
        elapsed = time.monotonic() - start
    # Without the setting one request may take 30 s; with it, 1 s (plus the MLflow half).
    assert elapsed < 20, elapsed


# --- in a pod: KUBERNETES_SERVICE_HOST and the service account ---------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServerCertificate:
    return server_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def in_cluster_kube(certificate: ServerCertificate) -> Iterator[FakeKubernetes]:
    """The API server a pod reaches over HTTPS at KUBERNETES_SERVICE_HOST."""
    yield from serve(FakeKubernetes(certificate))


@pytest.fixture
def pod(
    in_cluster_kube: FakeKubernetes,
    certificate: ServerCertificate,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> FakeKubernetes:
    """A pod's environment: the service variables and a mounted service account."""
    from kubernetes.config import incluster_config

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "ca.crt").write_bytes(certificate.ca_pem)
    # Where the kubelet mounts them in a real pod.
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(in_cluster_kube.port))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config of this machine
    return in_cluster_kube


def test_in_a_pod_auto_uses_the_service_account_ahead_of_a_kubeconfig(
    tracking_server: TrackingServer,
    logged_model: Any,
    pod: FakeKubernetes,
    kube: FakeKubernetes,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # points at the other server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    name = unique()
    reg = register_model(logged_model, name)  # no settings: the pod's environment
    assert reg.michelangelo is not None
    assert reg.michelangelo.backend == "kubernetes"
    assert list(pod.objects) == [("ml-team", f"{name}-1")]  # with the mounted token, over TLS
    assert [(verb, status) for verb, _, status in pod.requests] == [("create", 201)]
    assert kube.requests == []


def test_in_a_pod_without_a_service_account_is_a_configuration_error(
    tracking_server: TrackingServer, logged_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", "/nonexistent/token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    name = unique()
    with pytest.raises(ConfigurationError, match="the pod's service account") as info:
        register_model(
            logged_model,
            name,
            settings=Settings(tracking_uri=tracking_server.url, namespace="ml-team"),
        )
    assert info.value.variable == "KUBECONFIG"
    assert count_versions(tracking_server, name) == 0  # refused before anything existed
