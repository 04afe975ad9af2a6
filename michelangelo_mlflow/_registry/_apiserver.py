"""The ``apiserver`` backend: the Michelangelo Model API over gRPC.

Uses the official ``michelangelo`` package's generated stubs (the
``michelangelo-mlflow[michelangelo]`` extra). Every call carries the ``rpc-caller``,
``rpc-service`` and ``rpc-encoding`` metadata the API server requires.

This module is the one boundary where gRPC errors become this SDK's: ALREADY_EXISTS
on create and NOT_FOUND on get are control flow; every other status code becomes a
:class:`RegistrationError` with the fix in :data:`GRPC_ERRORS` (a test checks that
every gRPC status code has one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from michelangelo_mlflow._errors import first_line
from michelangelo_mlflow._registry import _model_object
from michelangelo_mlflow._registry._interface import AlreadyExists, Backend
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    MissingDependencyError,
    RegistrationError,
)

__all__ = ["DEFAULT_PORT", "GRPC_ERRORS", "ApiServerBackend", "endpoint_of", "from_grpc"]

DEFAULT_PORT = 15566
"""The Michelangelo API server's gRPC port when ``MA_API_SERVER`` names none."""

CALL_TIMEOUT = 30.0
"""Seconds one Model API call may take (capped by the registration timeout)."""


def endpoint_of(api_server: str) -> str:
    """``host:port`` for ``MA_API_SERVER``, adding the default port when it has none.

    Example:
        >>> endpoint_of("ma-apiserver.michelangelo")
        'ma-apiserver.michelangelo:15566'
    """
    value = api_server.strip()
    for scheme in ("grpc://", "dns:///"):
        value = value.removeprefix(scheme)
    if not value or "/" in value or " " in value:
        raise ConfigurationError(
            f"MA_API_SERVER={api_server!r} is not host:port",
            variable="MA_API_SERVER",
            fix="set it to the API server's host:port, such as ma-apiserver.michelangelo:15566",
        )
    host, _, port = value.rpartition(":")
    if port.isdigit() and host and not host.endswith(":"):
        return value
    return f"{value}:{DEFAULT_PORT}"


class ApiServerBackend(Backend):
    """Create and read Model objects through ``michelangelo.api.v2.ModelService``.

    Args:
        settings: ``api_server`` (``MA_API_SERVER``), ``api_server_tls``,
            ``caller`` and ``api_server_name`` are used.

    Raises:
        MissingDependencyError: ``michelangelo``/``grpcio`` are not installed.
        ConfigurationError: ``MA_API_SERVER`` is not set.
    """

    name = "apiserver"

    def __init__(self, settings: Settings) -> None:
        if not settings.api_server:
            raise ConfigurationError(
                "MICHELANGELO_MLFLOW_REGISTRY=apiserver needs the API server's address",
                variable="MA_API_SERVER",
                fix="set MA_API_SERVER=host:port (default port 15566), e.g. "
                "--env MA_API_SERVER=ma-apiserver.michelangelo:15566",
            )
        try:
            import grpc
            from michelangelo.gen.api.v2 import model_svc_pb2, model_svc_pb2_grpc
        except ImportError as exc:
            raise MissingDependencyError(
                "the apiserver registry backend (Michelangelo Model API over gRPC)",
                "michelangelo-mlflow[michelangelo]",
            ) from exc
        self._grpc = grpc
        self._messages = model_svc_pb2
        self.endpoint = endpoint_of(settings.api_server)
        self.location = f"the Michelangelo API server at {self.endpoint}"
        self.timeout = min(CALL_TIMEOUT, settings.register_timeout)
        self.metadata = (
            ("rpc-caller", settings.caller),
            ("rpc-service", settings.api_server_name),
            ("rpc-encoding", "proto"),
        )
        if settings.api_server_tls:
            self._channel = grpc.secure_channel(self.endpoint, grpc.ssl_channel_credentials())
        else:
            self._channel = grpc.insecure_channel(self.endpoint)
        self._stub = model_svc_pb2_grpc.ModelServiceStub(self._channel)

    def create(self, obj: Mapping[str, Any], *, model_name: str) -> dict[str, Any]:
        message = _model_object.to_proto(obj)
        request = self._messages.CreateModelRequest(model=message)
        ref = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        response = self._call("CreateModel", request, f"create Model {ref}", model_name)
        return _model_object.from_proto(response.model)

    def get(self, namespace: str, name: str, *, model_name: str) -> dict[str, Any] | None:
        request = self._messages.GetModelRequest(namespace=namespace, name=name)
        try:
            response = self._call("GetModel", request, f"get Model {namespace}/{name}", model_name)
        except _NotFound:
            return None
        return _model_object.from_proto(response.model)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, action: str, model_name: str) -> Any:
        try:
            return getattr(self._stub, method)(
                request, metadata=self.metadata, timeout=self.timeout
            )
        except self._grpc.RpcError as exc:
            code = exc.code()
            if code == self._grpc.StatusCode.ALREADY_EXISTS and method == "CreateModel":
                raise AlreadyExists(action) from exc
            # With MySQL metadata storage a missing object can come back as UNKNOWN.
            status = self._grpc.StatusCode
            missing = code == status.NOT_FOUND or (
                code == status.UNKNOWN and "not found" in (exc.details() or "").lower()
            )
            if method == "GetModel" and missing:
                raise _NotFound(action) from exc
            raise from_grpc(
                exc, endpoint=self.endpoint, action=action, model_name=model_name
            ) from exc


class _NotFound(Exception):
    pass


GRPC_ERRORS: Mapping[str, tuple[str, str]] = {
    "CANCELLED": (
        "the call was cancelled",
        "retry the registration; it completes the missing half",
    ),
    "UNKNOWN": (
        "the server failed with an unknown error",
        "retry the registration; if it persists, check the API server's logs",
    ),
    "INVALID_ARGUMENT": (
        "the server rejected the request as invalid",
        "check MICHELANGELO_MLFLOW_CALLER and MA_API_SERVER_NAME (the rpc-caller and "
        "rpc-service headers) and the model name; the details name the field",
    ),
    "DEADLINE_EXCEEDED": (
        "the server did not answer in time",
        "check that this pod can reach MA_API_SERVER, then retry the registration",
    ),
    "NOT_FOUND": (
        "the project (namespace) does not exist on the server",
        "pass namespace= an existing Michelangelo project (`ma project get`), or set MA_NAMESPACE",
    ),
    "ALREADY_EXISTS": (
        "the Model already exists",
        "use another model name, or delete the existing Model",
    ),
    "PERMISSION_DENIED": (
        "the caller is not allowed to do this",
        "ask the Michelangelo admin to grant this caller create and get on models in the project",
    ),
    "RESOURCE_EXHAUSTED": (
        "the server is rate limiting or out of quota",
        "retry the registration later; it completes the missing half",
    ),
    "FAILED_PRECONDITION": (
        "the object changed concurrently (stale resourceVersion)",
        "retry the registration; it re-reads the object",
    ),
    "ABORTED": (
        "the call was aborted by a concurrent change",
        "retry the registration",
    ),
    "OUT_OF_RANGE": (
        "a value is out of range",
        "check the model version and the arguments; the details name the field",
    ),
    "UNIMPLEMENTED": (
        "the server does not implement the Model API",
        "point MA_API_SERVER at the Michelangelo API server (default port 15566), not at "
        "another gRPC service",
    ),
    "INTERNAL": (
        "the server failed internally",
        "retry the registration; if it persists, check the API server's logs",
    ),
    "UNAVAILABLE": (
        "the server is not reachable",
        "check MA_API_SERVER (host:port), that the API server is running and that this "
        "pod may reach it (NetworkPolicy egress); set MICHELANGELO_MLFLOW_API_SERVER_TLS "
        "to match the server",
    ),
    "DATA_LOSS": (
        "the server reported data loss",
        "check the API server's logs before retrying",
    ),
    "UNAUTHENTICATED": (
        "the server did not accept this caller's credentials",
        "configure the API server's credentials for this pod (TLS and the rpc-caller "
        "identity, MICHELANGELO_MLFLOW_CALLER), then retry",
    ),
}
"""gRPC status code name → (what happened, what to do), for the Michelangelo Model API."""


def from_grpc(
    exc: BaseException, *, endpoint: str, action: str, model_name: str
) -> MichelangeloMlflowError:
    """Our error for a failed Michelangelo Model API call (a ``grpc.RpcError``).

    Args:
        exc: The ``grpc.RpcError`` (a ``grpc.Call``) or any other failure of the call.
        endpoint: The API server's ``host:port``.
        action: What was attempted, such as ``create Model ml-team/fraud-3``.
        model_name: The registered model name, for the error's attribute.

    Returns:
        A ``RegistrationError`` (not raised).
    """
    code_of = getattr(exc, "code", None)
    code = str(getattr(code_of(), "name", "UNKNOWN")) if callable(code_of) else "UNKNOWN"
    details_of = getattr(exc, "details", None)
    details = (
        (details_of() if callable(details_of) else None) or first_line(exc)
        if str(exc).strip()
        else type(exc).__name__
    )
    what, fix = GRPC_ERRORS.get(code, GRPC_ERRORS["UNKNOWN"])
    return RegistrationError(
        f"could not {action} on the Michelangelo API server at {endpoint}: {what} "
        f"({code}: {details})",
        model_name=model_name,
        fix=fix,
    )
