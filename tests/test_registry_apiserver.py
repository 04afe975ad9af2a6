"""The apiserver backend against the in-process Model API (real gRPC, official stubs)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("michelangelo")  # not installable on 3.13: see noxfile.py

import grpc
import requests
from michelangelo.gen.api.v2 import model_pb2, model_svc_pb2, model_svc_pb2_grpc
from mlflow import MlflowClient

from michelangelo_mlflow._registry import register_model
from michelangelo_mlflow._registry._apiserver import GRPC_ERRORS, endpoint_of
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MissingDependencyError,
    PartialRegistrationError,
    RegistrationError,
)
from michelangelo_mlflow.testing import TrackingServer
from michelangelo_mlflow.testing._model_api import ModelApiServer
from tests._faults import BlackHole
from tests.helpers.registry import SCHEMA_PATH, assert_strict_valid, unique
from tests.helpers.tls import ServerCertificate, server_certificate

HEADERS = (("rpc-caller", "tests"), ("rpc-service", "ma-apiserver"), ("rpc-encoding", "proto"))
CALL = {"metadata": HEADERS, "timeout": 10}  # what the tests' own stub calls send


@pytest.fixture
def api() -> Iterator[ModelApiServer]:
    with ModelApiServer(namespaces=["ml-team"], schema=SCHEMA_PATH) as server:
        yield server


@pytest.fixture
def stub(api: ModelApiServer) -> Iterator[Any]:
    with grpc.insecure_channel(api.address) as channel:
        yield model_svc_pb2_grpc.ModelServiceStub(channel)


def settings_for(server: TrackingServer, api: ModelApiServer, **extra: Any) -> Settings:
    return Settings(tracking_uri=server.url, api_server=api.address, namespace="ml-team", **extra)


def mlflow_versions(server: TrackingServer, name: str) -> list[Any]:
    with mlflow_scope(Settings(tracking_uri=server.url)):
        return list(MlflowClient().search_model_versions(f"name = '{name}'"))


def test_auto_picks_the_api_server_and_sends_the_required_headers(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer
) -> None:
    name = unique("fraud")
    reg = register_model(
        logged_model,
        name,
        kind="binary_classification",
        deployable_artifact_uri="s3://bucket/fraud/1/",
        settings=settings_for(tracking_server, api, caller="fraud-pipeline"),
    )
    assert reg.michelangelo is not None
    assert (reg.michelangelo.name, reg.michelangelo.backend) == (f"{name}-1", "apiserver")
    [stored] = api.objects("ml-team")
    assert_strict_valid(stored)
    assert stored["metadata"]["name"] == f"{name}-1"
    assert stored["metadata"]["resourceVersion"]
    assert "michelangelo/UpdateTimestamp" in stored["metadata"]["labels"]
    assert stored["spec"]["revisionId"] == 1
    assert stored["spec"]["kind"] == "MODEL_KIND_BINARY_CLASSIFICATION"
    assert [call.method for call in api.calls] == ["CreateModel"]
    assert api.calls[0].metadata["rpc-caller"] == "fraud-pipeline"
    assert api.calls[0].metadata["rpc-service"] == "ma-apiserver"
    assert api.calls[0].metadata["rpc-encoding"] == "proto"


def test_a_retried_registration_leaves_one_version_and_one_model(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer
) -> None:
    name = unique()
    settings = settings_for(tracking_server, api)
    first = register_model(logged_model, name, settings=settings)
    second = register_model(logged_model, name, settings=settings)
    assert first.michelangelo == second.michelangelo
    assert len(mlflow_versions(tracking_server, name)) == 1
    assert len(api.objects()) == 1
    assert [(c.method, c.code) for c in api.calls] == [
        ("CreateModel", "OK"),
        ("CreateModel", "ALREADY_EXISTS"),
        ("GetModel", "OK"),
    ]


@contextlib.contextmanager
def http_requests() -> Iterator[list[str]]:
    """The HTTP requests sent meanwhile (every MLflow REST call is one), as ``METHOD path``."""
    sent: list[str] = []
    send = requests.Session.send

    def counting(session: requests.Session, request: Any, **kwargs: Any) -> Any:
        sent.append(f"{request.method} {urlsplit(request.url).path.split('/mlflow/', 1)[-1]}")
        return send(session, request, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(requests.Session, "send", counting)
        yield sent


def test_a_registration_makes_only_the_round_trips_it_needs(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer
) -> None:
    """One search for idempotency, MLflow's own requests, one tag; a retry creates nothing."""
    settings = settings_for(tracking_server, api)
    register_model(logged_model, unique("warm"), settings=settings)  # preflight, connections
    model_id = logged_model.model_id
    logged = [f"GET logged-models/{model_id}", f"PATCH logged-models/{model_id}/tags"]
    link = ["GET registered-models/get", "POST model-versions/set-tag"]  # MLflow's prompt check
    name = unique()
    with http_requests() as sent:
        first = register_model(logged_model, name, settings=settings)
    assert sent == [
        "GET model-versions/search",
        "POST registered-models/create",
        "POST model-versions/create",
        f"GET logged-models/{model_id}",  # MLflow's client, in create
        *logged,
        *link,
    ]
    with http_requests() as sent:
        again = register_model(logged_model, name, settings=settings)
    assert again.mlflow.version == first.mlflow.version
    assert again.mlflow.tags == first.mlflow.tags
    assert sent == ["GET model-versions/search", f"GET logged-models/{model_id}"]
    assert [(c.method, c.code) for c in api.calls[-3:]] == [
        ("CreateModel", "OK"),
        ("CreateModel", "ALREADY_EXISTS"),
        ("GetModel", "OK"),
    ]


def test_a_version_number_taken_before_the_create_still_gets_the_right_links(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer
) -> None:
    """The link tags sent with the create expect the next number; MLflow may give another."""
    name = unique()
    with mlflow_scope(Settings(tracking_uri=tracking_server.url)):
        client = MlflowClient()
        client.create_registered_model(name)
        taken = client.create_model_version(
            name, logged_model.model_uri, model_id=logged_model.model_id
        )
        client.delete_model_version(name, taken.version)  # number 1 stays taken, unseen
    reg = register_model(logged_model, name, settings=settings_for(tracking_server, api))
    assert reg.mlflow.version == "2"
    [stored] = mlflow_versions(tracking_server, name)
    expected = {
        "michelangelo.namespace": "ml-team",
        "michelangelo.name": f"{name}-2",
        "michelangelo.revision_id": "2",
        "michelangelo.registry_uri": f"models:/ml-team/{name}/2",
        "michelangelo.backend": "apiserver",
    }
    assert {k: stored.tags.get(k) for k in expected} == expected
    assert {k: reg.mlflow.tags.get(k) for k in expected} == expected
    assert [o["metadata"]["name"] for o in api.objects()] == [f"{name}-2"]


def test_a_crash_between_the_halves_then_a_retry_completes_the_registration(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer
) -> None:
    name = unique()
    settings = settings_for(tracking_server, api)
    api.fail_next("CreateModel", "UNAVAILABLE", "connection reset")
    with pytest.raises(PartialRegistrationError) as info:
        register_model(logged_model, name, settings=settings)
    error = info.value
    assert error.mlflow_version == "1"
    assert error.model_name == name
    assert "UNAVAILABLE" in str(error)
    assert "MA_API_SERVER" in str(error)
    assert "call register_model again" in str(error)
    assert isinstance(error.__cause__, RegistrationError)
    assert isinstance(error.__cause__.__cause__, grpc.RpcError)
    [half] = mlflow_versions(tracking_server, name)
    assert "michelangelo.name" not in half.tags
    assert api.objects() == []

    reg = register_model(logged_model, name, settings=settings)
    assert reg.mlflow.version == "1"
    assert reg.mlflow.tags["michelangelo.name"] == f"{name}-1"
    assert len(mlflow_versions(tracking_server, name)) == 1
    assert [o["metadata"]["name"] for o in api.objects()] == [f"{name}-1"]


def test_another_registration_of_the_same_name_is_a_conflict_and_is_kept(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer, stub: Any
) -> None:
    name = unique()
    other = model_pb2.Model()
    other.metadata.name, other.metadata.namespace = f"{name}-1", "ml-team"
    other.metadata.annotations["mlflow.michelangelo.ai/registered-model-name"] = "other-model"
    other.spec.revision_id = 1
    stub.CreateModel(model_svc_pb2.CreateModelRequest(model=other), **CALL)
    before = api.objects()
    with pytest.raises(PartialRegistrationError, match=f"ml-team/{name}-1") as info:
        register_model(logged_model, name, settings=settings_for(tracking_server, api))
    assert "other-model" in str(info.value)
    assert api.objects() == before


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("PERMISSION_DENIED", "grant this caller create and get"),
        ("UNAUTHENTICATED", "credentials"),
        ("DEADLINE_EXCEEDED", "did not answer in time"),
    ],
)
def test_grpc_status_codes_become_registration_errors_with_a_fix(
    tracking_server: TrackingServer,
    logged_model: Any,
    api: ModelApiServer,
    fault: str,
    expected: str,
) -> None:
    api.fail_next("CreateModel", fault)
    with pytest.raises(PartialRegistrationError, match=expected) as info:
        register_model(logged_model, unique(), settings=settings_for(tracking_server, api))
    assert fault in str(info.value)


def test_an_unknown_project_is_not_found_naming_the_namespace(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer
) -> None:
    with pytest.raises(PartialRegistrationError, match="NOT_FOUND") as info:
        register_model(
            logged_model, unique(), namespace="nope", settings=settings_for(tracking_server, api)
        )
    assert "MA_NAMESPACE" in str(info.value)


def test_a_wrong_rpc_service_header_is_invalid_argument(
    tracking_server: TrackingServer, logged_model: Any, api: ModelApiServer
) -> None:
    settings = settings_for(tracking_server, api, api_server_name="wrong")
    with pytest.raises(PartialRegistrationError, match=r"INVALID_ARGUMENT.*rpc-service"):
        register_model(logged_model, unique(), settings=settings)


def test_caller_and_server_come_from_the_environment(
    tracking_server: TrackingServer,
    logged_model: Any,
    api: ModelApiServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MA_API_SERVER", api.address)
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_CALLER", "fraud-pipeline-from-env")
    name = unique()
    reg = register_model(logged_model, name)  # no settings: the environment's
    assert reg.michelangelo is not None
    assert reg.michelangelo.backend == "apiserver"
    assert [(c.method, c.metadata["rpc-caller"]) for c in api.calls] == [
        ("CreateModel", "fraud-pipeline-from-env")
    ]


def test_register_timeout_bounds_a_model_api_call_that_never_returns(
    tracking_server: TrackingServer, logged_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_REGISTER_TIMEOUT", "1")
    with BlackHole() as hole:  # accepts the connection, never answers
        settings = Settings(
            tracking_uri=tracking_server.url,
            api_server=f"127.0.0.1:{hole.port}",
            namespace="ml-team",
        )
        start = time.monotonic()
        with pytest.raises(PartialRegistrationError, match="DEADLINE_EXCEEDED") as info:
            register_model(logged_model, unique(), settings=settings)
        elapsed = time.monotonic() - start
    assert "did not answer in time" in str(info.value)
    # Without the setting one call may take 30 s; with it, 1 s (plus the MLflow half).
    assert elapsed < 20, elapsed


# --- TLS (MICHELANGELO_MLFLOW_API_SERVER_TLS) -------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServerCertificate:
    return server_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_api(certificate: ServerCertificate) -> Iterator[ModelApiServer]:
    """The Model API serving TLS only, with a certificate for 127.0.0.1 from a test CA."""
    tls = (certificate.key_pem, certificate.cert_pem)
    with ModelApiServer(namespaces=["ml-team"], schema=SCHEMA_PATH, tls=tls) as server:
        yield server


def test_tls_setting_registers_over_tls(
    tracking_server: TrackingServer,
    logged_model: Any,
    tls_api: ModelApiServer,
    certificate: ServerCertificate,
    tmp_path: Path,
) -> None:
    # In a fresh process: gRPC reads its default CA bundle (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)
    # once per process, and this one must trust the test CA.
    name = unique("tls")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_server.url,
        "MA_API_SERVER": tls_api.address,
        "MA_NAMESPACE": "ml-team",
        "MICHELANGELO_MLFLOW_API_SERVER_TLS": "true",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certificate.ca_path),
    }
    script = (
        "import json, sys\n"
        "import michelangelo_mlflow as mm\n"
        "reg = mm.register_model(sys.argv[1], sys.argv[2])\n"
        "print(json.dumps({'backend': reg.michelangelo.backend, 'name': reg.michelangelo.name}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"runs:/{logged_model.run_id}/model", name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "backend": "apiserver",
        "name": f"{name}-1",
    }
    assert [(c.method, c.code) for c in tls_api.calls] == [("CreateModel", "OK")]
    assert [o["metadata"]["name"] for o in tls_api.objects("ml-team")] == [f"{name}-1"]


def test_tls_setting_against_a_plaintext_server_is_unavailable(
    tracking_server: TrackingServer,
    logged_model: Any,
    api: ModelApiServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_API_SERVER_TLS", "1")
    with pytest.raises(PartialRegistrationError, match="UNAVAILABLE") as info:
        register_model(logged_model, unique(), settings=settings_for(tracking_server, api))
    assert "MICHELANGELO_MLFLOW_API_SERVER_TLS" in str(info.value)
    assert isinstance(info.value.__cause__, RegistrationError)
    assert api.calls == []  # the handshake failed: no call reached the service


def test_plaintext_against_a_tls_server_is_unavailable(
    tracking_server: TrackingServer, logged_model: Any, tls_api: ModelApiServer
) -> None:
    with pytest.raises(PartialRegistrationError, match="UNAVAILABLE"):
        register_model(logged_model, unique(), settings=settings_for(tracking_server, tls_api))
    assert tls_api.calls == []


def test_every_grpc_status_code_is_mapped() -> None:
    assert {code.name for code in grpc.StatusCode} - {"OK"} <= set(GRPC_ERRORS)


def test_without_the_michelangelo_package_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "michelangelo.gen.api.v2", None)
    settings = Settings(api_server="localhost", namespace="ml-team")  # auto: apiserver
    with pytest.raises(MissingDependencyError, match=r"michelangelo-mlflow\[michelangelo\]"):
        register_model("runs:/abc/model", "m", settings=settings)


@pytest.mark.parametrize(
    ("value", "endpoint"),
    [
        ("ma-apiserver", "ma-apiserver:15566"),
        ("ma-apiserver:443", "ma-apiserver:443"),
        ("grpc://10.0.0.1:15566", "10.0.0.1:15566"),
    ],
)
def test_endpoint_adds_the_default_port(value: str, endpoint: str) -> None:
    assert endpoint_of(value) == endpoint


def test_an_endpoint_with_a_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="host:port"):
        endpoint_of("http://ma-apiserver/api")


# --- the ModelApiServer test helper's own semantics --------------------------------------


def model(name: str, namespace: str = "ml-team") -> Any:
    message = model_pb2.Model()
    message.metadata.name, message.metadata.namespace = name, namespace
    message.spec.revision_id = 1
    return message


def status_of(call: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return str(info.value.code().name)


def test_helper_requires_all_three_headers(stub: Any) -> None:
    request = model_svc_pb2.GetModelRequest(namespace="ml-team", name="x")
    missing_header = {**CALL, "metadata": HEADERS[:2]}
    assert status_of(lambda: stub.GetModel(request, **missing_header)) == "INVALID_ARGUMENT"


def test_helper_create_get_update_delete_semantics(stub: Any, api: ModelApiServer) -> None:
    create = model_svc_pb2.CreateModelRequest(model=model("m-1"))
    created = stub.CreateModel(create, **CALL).model
    assert created.metadata.resourceVersion
    assert status_of(lambda: stub.CreateModel(create, **CALL)) == "ALREADY_EXISTS"
    bad = model_svc_pb2.CreateModelRequest(model=model("Bad_Name"))
    assert status_of(lambda: stub.CreateModel(bad, **CALL)) == "INVALID_ARGUMENT"
    missing_ns = model_svc_pb2.CreateModelRequest(model=model("m-1", "other"))
    assert status_of(lambda: stub.CreateModel(missing_ns, **CALL)) == "NOT_FOUND"
    get_missing = model_svc_pb2.GetModelRequest(namespace="ml-team", name="nope")
    assert status_of(lambda: stub.GetModel(get_missing, **CALL)) == "NOT_FOUND"

    no_version = model_svc_pb2.UpdateModelRequest(model=model("m-1"))
    assert status_of(lambda: stub.UpdateModel(no_version, **CALL)) == "INVALID_ARGUMENT"
    update = model("m-1")
    update.metadata.resourceVersion = created.metadata.resourceVersion
    update.spec.revision_id = 2
    updated = stub.UpdateModel(model_svc_pb2.UpdateModelRequest(model=update), **CALL).model
    assert updated.metadata.resourceVersion != created.metadata.resourceVersion
    assert updated.spec.revision_id == 2
    stale = model_svc_pb2.UpdateModelRequest(model=update)
    assert status_of(lambda: stub.UpdateModel(stale, **CALL)) == "FAILED_PRECONDITION"

    listed = stub.ListModel(model_svc_pb2.ListModelRequest(namespace="ml-team"), **CALL)
    assert [m.metadata.name for m in listed.model_list.items] == ["m-1"]
    stub.DeleteModel(model_svc_pb2.DeleteModelRequest(namespace="ml-team", name="m-1"), **CALL)
    assert api.objects() == []


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("a" * 253, "OK"),
        ("fraud-1.v2", "OK"),
        ("a" * 254, "INVALID_ARGUMENT"),
        ("Fraud-1", "INVALID_ARGUMENT"),
        ("fraud_1", "INVALID_ARGUMENT"),
        ("a..b", "INVALID_ARGUMENT"),
        ("-fraud", "INVALID_ARGUMENT"),
        ("fraud-", "INVALID_ARGUMENT"),
    ],
)
def test_helper_checks_names_by_the_kubernetes_rule(stub: Any, name: str, status: str) -> None:
    request = model_svc_pb2.CreateModelRequest(model=model(name))
    if status == "OK":
        assert stub.CreateModel(request, **CALL).model.metadata.name == name
    else:
        assert status_of(lambda: stub.CreateModel(request, **CALL)) == status


def test_helper_validates_stored_objects_against_its_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"spec": {"properties": {"revisionId": {"minimum": 1}}}},
    }
    with ModelApiServer(schema=schema) as server, grpc.insecure_channel(server.address) as ch:
        stub = model_svc_pb2_grpc.ModelServiceStub(ch)
        invalid = model("m-0")
        invalid.spec.revision_id = -1
        request = model_svc_pb2.CreateModelRequest(model=invalid)
        assert status_of(lambda: stub.CreateModel(request, **CALL)) == ("INVALID_ARGUMENT")
        assert server.objects() == []
