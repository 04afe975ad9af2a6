"""The apiserver backend against the in-process Model API (real gRPC, official stubs)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from michelangelo.gen.api.v2 import model_pb2, model_svc_pb2, model_svc_pb2_grpc
from mlflow import MlflowClient

from michelangelo_mlflow._errors import GRPC_ERRORS
from michelangelo_mlflow._registry import register_model
from michelangelo_mlflow._registry._apiserver import endpoint_of
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
from tests.helpers.registry import SCHEMA_PATH, assert_strict_valid, unique

HEADERS = (("rpc-caller", "tests"), ("rpc-service", "ma-apiserver"), ("rpc-encoding", "proto"))


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
    stub.CreateModel(model_svc_pb2.CreateModelRequest(model=other), metadata=HEADERS)
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


def test_every_grpc_status_code_is_mapped() -> None:
    assert {code.name for code in grpc.StatusCode} - {"OK"} <= set(GRPC_ERRORS)


def test_without_the_michelangelo_package_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "michelangelo.gen.api.v2", None)
    settings = Settings(registry="apiserver", api_server="localhost", namespace="ml-team")
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
    assert status_of(lambda: stub.GetModel(request, metadata=HEADERS[:2])) == "INVALID_ARGUMENT"


def test_helper_create_get_update_delete_semantics(stub: Any, api: ModelApiServer) -> None:
    create = model_svc_pb2.CreateModelRequest(model=model("m-1"))
    created = stub.CreateModel(create, metadata=HEADERS).model
    assert created.metadata.resourceVersion
    assert status_of(lambda: stub.CreateModel(create, metadata=HEADERS)) == "ALREADY_EXISTS"
    bad = model_svc_pb2.CreateModelRequest(model=model("Bad_Name"))
    assert status_of(lambda: stub.CreateModel(bad, metadata=HEADERS)) == "INVALID_ARGUMENT"
    missing_ns = model_svc_pb2.CreateModelRequest(model=model("m-1", "other"))
    assert status_of(lambda: stub.CreateModel(missing_ns, metadata=HEADERS)) == "NOT_FOUND"
    get_missing = model_svc_pb2.GetModelRequest(namespace="ml-team", name="nope")
    assert status_of(lambda: stub.GetModel(get_missing, metadata=HEADERS)) == "NOT_FOUND"

    no_version = model_svc_pb2.UpdateModelRequest(model=model("m-1"))
    assert status_of(lambda: stub.UpdateModel(no_version, metadata=HEADERS)) == "INVALID_ARGUMENT"
    update = model("m-1")
    update.metadata.resourceVersion = created.metadata.resourceVersion
    update.spec.revision_id = 2
    updated = stub.UpdateModel(
        model_svc_pb2.UpdateModelRequest(model=update), metadata=HEADERS
    ).model
    assert updated.metadata.resourceVersion != created.metadata.resourceVersion
    assert updated.spec.revision_id == 2
    stale = model_svc_pb2.UpdateModelRequest(model=update)
    assert status_of(lambda: stub.UpdateModel(stale, metadata=HEADERS)) == "FAILED_PRECONDITION"

    listed = stub.ListModel(model_svc_pb2.ListModelRequest(namespace="ml-team"), metadata=HEADERS)
    assert [m.metadata.name for m in listed.model_list.items] == ["m-1"]
    stub.DeleteModel(
        model_svc_pb2.DeleteModelRequest(namespace="ml-team", name="m-1"), metadata=HEADERS
    )
    assert api.objects() == []


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
        assert status_of(lambda: stub.CreateModel(request, metadata=HEADERS)) == (
            "INVALID_ARGUMENT"
        )
        assert server.objects() == []
