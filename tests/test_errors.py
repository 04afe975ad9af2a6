"""The translation boundary: every MLflow error code mapped, real server errors translated."""

from __future__ import annotations

import uuid

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from michelangelo_mlflow import _errors
from michelangelo_mlflow._errors import CODE_CATEGORIES, from_foreign, translate
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._versions import client_version, remember_server_version
from michelangelo_mlflow.exceptions import (
    ArtifactStoreError,
    AuthenticationError,
    MichelangeloMlflowError,
    MissingDependencyError,
    TrackingError,
    TrackingServerUnreachableError,
    VersionMismatchError,
)
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import closed_port

URI = "http://mlflow.example.com:5000"


def mlflow_error(code: str, message: str = "boom") -> MlflowException:
    return MlflowException(message, error_code=getattr(databricks_pb2, code))


def test_every_mlflow_error_code_is_mapped() -> None:
    # Fails when an MLflow upgrade adds an error code: map it in _errors.CODE_CATEGORIES.
    assert set(databricks_pb2.ErrorCode.keys()) == set(CODE_CATEGORIES)


@pytest.mark.parametrize("code", sorted(databricks_pb2.ErrorCode.keys()))
def test_every_code_becomes_one_of_ours_chained(code: str) -> None:
    original = mlflow_error(code)
    with pytest.raises(MichelangeloMlflowError) as info, translate(URI, run_id="r1"):
        raise original
    assert info.value.__cause__ is original
    assert URI in str(info.value)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("UNAUTHENTICATED", AuthenticationError),
        ("PERMISSION_DENIED", AuthenticationError),
        ("CUSTOMER_UNAUTHORIZED", AuthenticationError),
        ("TEMPORARILY_UNAVAILABLE", TrackingServerUnreachableError),
        ("IO_ERROR", ArtifactStoreError),
        ("RESOURCE_DOES_NOT_EXIST", TrackingError),
        ("INVALID_PARAMETER_VALUE", TrackingError),
        ("REQUEST_LIMIT_EXCEEDED", TrackingError),
    ],
)
def test_codes_map_to_the_guides_rows(code: str, expected: type[Exception]) -> None:
    ours = from_foreign(mlflow_error(code), tracking_uri=URI)
    assert type(ours) is expected


def test_retries_exhausted_is_unreachable() -> None:
    exc = mlflow_error(
        "INTERNAL_ERROR",
        "API request to http://x failed: Max retries exceeded (Connection refused)",
    )
    assert isinstance(from_foreign(exc, tracking_uri=URI), TrackingServerUnreachableError)


def test_a_plain_internal_error_is_a_tracking_error_with_the_code() -> None:
    ours = from_foreign(mlflow_error("INTERNAL_ERROR", "database is locked"), tracking_uri=URI)
    assert type(ours) is TrackingError
    assert ours.error_code == "INTERNAL_ERROR"


def test_requests_connection_error_is_unreachable_with_the_fix() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get(f"{uri}/health", timeout=5)  # a real refusal, not a scripted one
    ours = from_foreign(refused.value, tracking_uri=uri)
    assert isinstance(ours, TrackingServerUnreachableError)
    assert ours.tracking_uri == uri
    assert "NetworkPolicy" in (ours.fix or "")


def test_tls_failure_names_the_cert_variable() -> None:
    ours = from_foreign(requests.exceptions.SSLError("bad cert"), tracking_uri=URI)
    assert isinstance(ours, TrackingServerUnreachableError)
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in (ours.fix or "")


def test_logged_models_404_is_a_version_mismatch_with_both_versions_and_the_pin() -> None:
    remember_server_version(URI, "2.22.5")
    exc = mlflow_error(
        "ENDPOINT_NOT_FOUND", "API request to endpoint /api/2.0/mlflow/logged-models failed: 404"
    )
    ours = from_foreign(exc, tracking_uri=URI)
    assert isinstance(ours, VersionMismatchError)
    assert (ours.client_version, ours.server_version, ours.pin) == (
        client_version(),
        "2.22.5",
        "mlflow~=2.22.0",
    )
    assert "mlflow~=2.22.0" in str(ours)


def test_invalid_parameter_with_a_known_skew_is_a_version_mismatch() -> None:
    remember_server_version(URI, "2.22.5")
    ours = from_foreign(mlflow_error("INVALID_PARAMETER_VALUE"), tracking_uri=URI)
    assert isinstance(ours, VersionMismatchError)


def test_missing_mlflow_names_the_requirement_line() -> None:
    ours = from_foreign(
        ModuleNotFoundError("No module named 'mlflow'", name="mlflow"), tracking_uri=URI
    )
    assert isinstance(ours, MissingDependencyError)
    assert isinstance(ours, ImportError)
    assert ours.requirement == "mlflow>=2.22,<4"
    assert "requirements.txt" in str(ours)


def test_unrelated_modules_and_errors_pass_through() -> None:
    assert from_foreign(ModuleNotFoundError("x", name="my_package"), tracking_uri=URI) is None
    with pytest.raises(KeyError), translate(URI):
        raise KeyError("user code")


def test_our_errors_are_not_wrapped_twice() -> None:
    error = TrackingError("x", tracking_uri=URI)
    with pytest.raises(TrackingError) as info, translate(URI):
        raise error
    assert info.value is error


def test_artifact_store_client_errors_are_artifact_errors() -> None:
    # botocore is not installed here; its exceptions are recognised by their module.
    no_credentials = type("NoCredentialsError", (Exception,), {"__module__": "botocore.exceptions"})
    ours = from_foreign(
        no_credentials("Unable to locate credentials"), tracking_uri=URI, run_id="r1"
    )
    assert isinstance(ours, ArtifactStoreError)
    assert ours.run_id == "r1"
    assert "artifact store" in (ours.fix or "")


# --- real servers -------------------------------------------------------------------
def test_real_refused_connection_is_unreachable() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(tracking_uri=uri, http_max_retries=0)
    from mlflow.tracking import MlflowClient

    with (
        mlflow_scope(settings),
        pytest.raises(TrackingServerUnreachableError, match=uri),
        translate(uri),
    ):
        MlflowClient().search_experiments()


def test_real_wrong_password_is_an_authentication_error(auth_server: TrackingServer) -> None:
    from mlflow.tracking import MlflowClient

    settings = Settings(
        tracking_uri=auth_server.url, tracking_username="admin", tracking_password="wrong"
    )
    with (
        mlflow_scope(settings),
        pytest.raises(AuthenticationError, match="HTTP 401") as info,
        translate(auth_server.url),
    ):
        MlflowClient().search_experiments()
    assert info.value.fix == _errors.FIX_CREDENTIALS


def test_real_read_only_user_writing_is_a_permission_error(auth_server: TrackingServer) -> None:
    from mlflow.tracking import MlflowClient

    user, password = f"reader-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    auth_server.create_user(user, password)
    settings = Settings(
        tracking_uri=auth_server.url, tracking_username=user, tracking_password=password
    )
    with (
        mlflow_scope(settings),
        pytest.raises(AuthenticationError, match="HTTP 403") as info,
        translate(auth_server.url),
    ):
        MlflowClient().create_run("0")
    assert info.value.fix == _errors.FIX_PERMISSION
    assert password not in str(info.value)
