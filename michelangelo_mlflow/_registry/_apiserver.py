"""The ``apiserver`` backend: the Michelangelo Model API over gRPC.

Uses the official ``michelangelo`` package's generated stubs (the
``michelangelo-mlflow[michelangelo]`` extra). Every call carries the ``rpc-caller``,
``rpc-service`` and ``rpc-encoding`` metadata the API server requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from michelangelo_mlflow import _errors
from michelangelo_mlflow._registry import _model_object
from michelangelo_mlflow._registry._backends import AlreadyExists, Backend
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import ConfigurationError, MissingDependencyError

__all__ = ["DEFAULT_PORT", "ApiServerBackend", "endpoint_of"]

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
            raise _errors.from_grpc(
                exc, endpoint=self.endpoint, action=action, model_name=model_name
            ) from exc


class _NotFound(Exception):
    pass
