"""An in-process Michelangelo Model API (gRPC ``ModelService``) for tests.

Needs the ``michelangelo-mlflow[michelangelo]`` extra (the official generated stubs
and ``grpcio``).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from michelangelo_mlflow.exceptions import MissingDependencyError
from michelangelo_mlflow.testing._service import Service

__all__ = ["ModelApiCall", "ModelApiServer"]

_REQUIRED_HEADERS = ("rpc-caller", "rpc-service", "rpc-encoding")
_TIMESTAMP_LABELS = ("michelangelo/UpdateTimestamp", "michelangelo/SpecUpdateTimestamp")

# Kubernetes' own object name rule, written out as in k8s.io/apimachinery's
# pkg/util/validation (IsDNS1123Subdomain) rather than imported from the SDK, so that
# this server is an oracle independent of the code it tests.
_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1123_SUBDOMAIN_MAX_LENGTH = 253


@dataclass(frozen=True)
class ModelApiCall:
    """One call the server received.

    Attributes:
        method: ``CreateModel``, ``GetModel`` …
        metadata: The call's metadata (headers), lowercased keys.
        code: The status code name it was answered with (``OK``, ``ALREADY_EXISTS`` …).
    """

    method: str
    metadata: Mapping[str, str]
    code: str


class ModelApiServer(Service):
    """A real gRPC server on ``127.0.0.1`` implementing ``michelangelo.api.v2.ModelService``.

    It implements ``ModelServiceServicer`` from the official generated stubs with the
    API server's semantics, so code that registers models can be tested without a
    cluster:

    - every call must carry ``rpc-caller``, ``rpc-service`` (equal to ``service``)
      and ``rpc-encoding: proto`` metadata, else ``INVALID_ARGUMENT``;
    - ``CreateModel``: an invalid name (not DNS-1123) or a missing namespace is
      ``INVALID_ARGUMENT``, an unknown namespace (when ``namespaces`` is given)
      ``NOT_FOUND``, a duplicate ``ALREADY_EXISTS``;
    - ``GetModel``/``DeleteModel`` of a missing object: ``NOT_FOUND``;
    - ``UpdateModel`` is a full replace: without ``metadata.resourceVersion``
      ``INVALID_ARGUMENT``, with a stale one ``FAILED_PRECONDITION``;
    - every write sets a new ``resourceVersion``, a ``uid``, ``generation``, and the
      labels ``michelangelo/UpdateTimestamp`` and ``michelangelo/SpecUpdateTimestamp``;
    - with ``schema`` (a JSON schema, such as the CRD's strict ``openAPIV3Schema``),
      every object is validated in its Kubernetes form before it is stored
      (``INVALID_ARGUMENT`` on a violation; needs ``jsonschema``);
    - with ``tls`` it serves TLS only, like an API server behind a TLS endpoint.

    :meth:`fail_next` scripts faults (``UNAVAILABLE``, ``PERMISSION_DENIED`` …);
    :attr:`calls` records what was received; :meth:`objects` returns what is stored.

    Args:
        namespaces: Projects that exist; ``None`` accepts every namespace.
        service: The expected ``rpc-service`` header.
        schema: A JSON schema (dict) or the path of one to validate objects against.
        tls: ``(private_key_pem, certificate_chain_pem)``: serve TLS with this key and
            certificate instead of plaintext.

    Examples:
        >>> with ModelApiServer(namespaces=["ml-team"]) as api:  # doctest: +SKIP
        ...     settings = mm.Settings(api_server=api.address)  # auto: the API server
        ...     mm.register_model(info, "fraud", namespace="ml-team", settings=settings)
        ...     (model,) = api.objects("ml-team")
        ...     assert model["metadata"]["name"] == "fraud-1"
    """

    def __init__(
        self,
        *,
        namespaces: Iterable[str] | None = None,
        service: str = "ma-apiserver",
        schema: Mapping[str, Any] | str | Path | None = None,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        try:
            import grpc
            from michelangelo.gen.api.v2 import model_pb2, model_svc_pb2, model_svc_pb2_grpc
        except ImportError as exc:
            raise MissingDependencyError(
                "ModelApiServer (the in-process Michelangelo Model API)",
                "michelangelo-mlflow[michelangelo]",
            ) from exc
        self._grpc = grpc
        self._model_pb2 = model_pb2
        self._svc_pb2 = model_svc_pb2
        self._svc_grpc = model_svc_pb2_grpc
        self.namespaces = None if namespaces is None else set(namespaces)
        self.service = service
        self._validator = _validator(schema)
        self._tls = tls
        self._lock = threading.Lock()
        self._store: dict[tuple[str, str], Any] = {}
        self._faults: list[tuple[str | None, Any, str]] = []
        self._revision = 0
        self.calls: list[ModelApiCall] = []
        self.port = 0
        self._server: Any = None

    # --- lifecycle -------------------------------------------------------------------
    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the value for ``MA_API_SERVER``."""
        if not self.port:
            raise RuntimeError("the Model API server is not started; call start() first")
        return f"127.0.0.1:{self.port}"

    def start(self) -> ModelApiServer:
        """Start serving on a free loopback port (TLS only when started with ``tls``).

        Returns:
            This server.
        """
        server = self._grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._svc_grpc.add_ModelServiceServicer_to_server(_servicer(self), server)
        if self._tls is None:
            self.port = server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = self._grpc.ssl_server_credentials([self._tls])
            self.port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving (stored objects are kept and visible through :meth:`objects`)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait(timeout=30)

    def __repr__(self) -> str:
        return f"ModelApiServer(port={self.port}, objects={len(self._store)})"

    # --- test controls ---------------------------------------------------------------
    def fail_next(self, method: str | None, code: str, details: str = "injected fault") -> None:
        """Answer the next call of ``method`` (``None``: any method) with ``code``.

        Args:
            method: ``CreateModel``, ``GetModel`` … or ``None``.
            code: A ``grpc.StatusCode`` name, such as ``UNAVAILABLE``.
            details: The status details.
        """
        with self._lock:
            self._faults.append((method, self._grpc.StatusCode[code], details))

    def objects(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored Model objects in their Kubernetes form, sorted by namespace and name."""
        from google.protobuf import json_format

        with self._lock:
            items = sorted(self._store.items())
            return [
                _kubernetes_form(json_format.MessageToDict(model))
                for (ns, _), model in items
                if namespace is None or ns == namespace
            ]

    def add_namespace(self, namespace: str) -> None:
        """Create a project (when the server was started with ``namespaces``)."""
        with self._lock:
            if self.namespaces is not None:
                self.namespaces.add(namespace)

    # --- the service, called by _Servicer --------------------------------------------
    def _handle(self, method: str, context: Any, body: Callable[[], Any]) -> Any:
        metadata = {key.lower(): value for key, value in context.invocation_metadata()}
        code = "OK"
        try:
            with self._lock:
                fault = next((f for f in self._faults if f[0] in (None, method)), None)
                if fault is not None:
                    self._faults.remove(fault)
                    raise _Abort(fault[1], fault[2])
                missing = [h for h in _REQUIRED_HEADERS if not metadata.get(h)]
                if missing:
                    raise _Abort(
                        self._grpc.StatusCode.INVALID_ARGUMENT,
                        f"missing required header(s): {', '.join(missing)}",
                    )
                if metadata["rpc-service"] != self.service:
                    raise _Abort(
                        self._grpc.StatusCode.INVALID_ARGUMENT,
                        f"unknown rpc-service {metadata['rpc-service']!r}",
                    )
                if metadata["rpc-encoding"] != "proto":
                    raise _Abort(
                        self._grpc.StatusCode.INVALID_ARGUMENT,
                        f"unsupported rpc-encoding {metadata['rpc-encoding']!r}",
                    )
                return body()
        except _Abort as abort:
            code = abort.code.name
            context.abort(abort.code, abort.details)
        finally:
            self.calls.append(ModelApiCall(method, metadata, code))

    def _create(self, request: Any) -> Any:
        model = copy.deepcopy(request.model)
        namespace, name = model.metadata.namespace, model.metadata.name
        self._check_identity(namespace, name)
        if (namespace, name) in self._store:
            raise _Abort(
                self._grpc.StatusCode.ALREADY_EXISTS,
                f'models.michelangelo.api "{name}" already exists',
            )
        model.metadata.uid = f"uid-{namespace}-{name}-{self._revision + 1}"
        model.metadata.generation = 1
        self._write(model, spec_changed=True)
        return self._svc_pb2.CreateModelResponse(model=copy.deepcopy(model))

    def _get(self, request: Any) -> Any:
        model = self._lookup(request.namespace, request.name)
        return self._svc_pb2.GetModelResponse(model=copy.deepcopy(model))

    def _update(self, request: Any) -> Any:
        model = copy.deepcopy(request.model)
        namespace, name = model.metadata.namespace, model.metadata.name
        self._check_identity(namespace, name)
        current = self._lookup(namespace, name)
        if not model.metadata.resourceVersion:
            raise _Abort(
                self._grpc.StatusCode.INVALID_ARGUMENT,
                "metadata.resourceVersion must be specified for an update",
            )
        if model.metadata.resourceVersion != current.metadata.resourceVersion:
            raise _Abort(
                self._grpc.StatusCode.FAILED_PRECONDITION,
                f"the object has been modified (resourceVersion "
                f"{model.metadata.resourceVersion} != {current.metadata.resourceVersion}); "
                "please apply your changes to the latest version and try again",
            )
        model.metadata.uid = current.metadata.uid
        spec_changed = model.spec != current.spec
        model.metadata.generation = current.metadata.generation + (1 if spec_changed else 0)
        if not spec_changed:
            model.metadata.labels[_TIMESTAMP_LABELS[1]] = current.metadata.labels.get(
                _TIMESTAMP_LABELS[1], ""
            )
        self._write(model, spec_changed=spec_changed)
        return self._svc_pb2.UpdateModelResponse(model=copy.deepcopy(model))

    def _delete(self, request: Any) -> Any:
        self._lookup(request.namespace, request.name)
        del self._store[(request.namespace, request.name)]
        return self._svc_pb2.DeleteModelResponse()

    def _delete_collection(self, request: Any) -> Any:
        for key in [key for key in self._store if key[0] == request.namespace]:
            del self._store[key]
        return self._svc_pb2.DeleteModelCollectionResponse()

    def _list(self, request: Any) -> Any:
        items = [
            copy.deepcopy(model)
            for (namespace, _), model in sorted(self._store.items())
            if namespace == request.namespace
        ]
        model_list = self._model_pb2.ModelList(items=items)
        return self._svc_pb2.ListModelResponse(model_list=model_list)

    def _check_identity(self, namespace: str, name: str) -> None:
        if not namespace:
            raise _Abort(self._grpc.StatusCode.INVALID_ARGUMENT, "metadata.namespace is required")
        if len(name) > _DNS1123_SUBDOMAIN_MAX_LENGTH or not _DNS1123_SUBDOMAIN.fullmatch(name):
            raise _Abort(
                self._grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata.name {name!r} is invalid: a lowercase RFC 1123 subdomain must "
                "consist of lower case alphanumeric characters, '-' or '.'",
            )
        if self.namespaces is not None and namespace not in self.namespaces:
            raise _Abort(self._grpc.StatusCode.NOT_FOUND, f'namespaces "{namespace}" not found')

    def _lookup(self, namespace: str, name: str) -> Any:
        model = self._store.get((namespace, name))
        if model is None:
            raise _Abort(
                self._grpc.StatusCode.NOT_FOUND,
                f'models.michelangelo.api "{name}" not found',
            )
        return model

    def _write(self, model: Any, *, spec_changed: bool) -> None:
        from google.protobuf import json_format

        now = str(time.time_ns())
        model.metadata.labels[_TIMESTAMP_LABELS[0]] = now
        if spec_changed:
            model.metadata.labels[_TIMESTAMP_LABELS[1]] = now
        if self._validator is not None:
            document = _kubernetes_form(json_format.MessageToDict(model))
            errors = sorted(self._validator.iter_errors(document), key=lambda e: list(e.path))
            if errors:
                where = "/".join(str(p) for p in errors[0].absolute_path)
                raise _Abort(
                    self._grpc.StatusCode.INVALID_ARGUMENT,
                    f"Model {model.metadata.namespace}/{model.metadata.name} is invalid at "
                    f"{where or '.'}: {errors[0].message}",
                )
        self._revision += 1
        model.metadata.resourceVersion = str(self._revision)
        self._store[(model.metadata.namespace, model.metadata.name)] = model


class _Abort(Exception):
    def __init__(self, code: Any, details: str) -> None:
        self.code = code
        self.details = details


def _kubernetes_form(data: dict[str, Any]) -> dict[str, Any]:
    data.pop("typeMeta", None)
    data.pop("status", None)
    return {"apiVersion": "michelangelo.api/v2", "kind": "Model", **data}


def _validator(schema: Mapping[str, Any] | str | Path | None) -> Any:
    if schema is None:
        return None
    try:
        import jsonschema
    except ImportError as exc:
        raise MissingDependencyError("ModelApiServer(schema=...)", "jsonschema") from exc
    loaded: Any = (
        schema
        if isinstance(schema, Mapping)
        else json.loads(Path(schema).read_text(encoding="utf-8"))
    )
    return jsonschema.Draft7Validator(loaded)


def _servicer(server: ModelApiServer) -> Any:
    """The official ``ModelServiceServicer``, its methods served by ``server``."""
    from michelangelo.gen.api.v2 import model_svc_pb2_grpc

    base: Any = model_svc_pb2_grpc.ModelServiceServicer

    class Servicer(base):  # type: ignore[misc]
        def CreateModel(self, request: Any, context: Any) -> Any:
            return server._handle("CreateModel", context, lambda: server._create(request))

        def GetModel(self, request: Any, context: Any) -> Any:
            return server._handle("GetModel", context, lambda: server._get(request))

        def UpdateModel(self, request: Any, context: Any) -> Any:
            return server._handle("UpdateModel", context, lambda: server._update(request))

        def DeleteModel(self, request: Any, context: Any) -> Any:
            return server._handle("DeleteModel", context, lambda: server._delete(request))

        def DeleteModelCollection(self, request: Any, context: Any) -> Any:
            return server._handle(
                "DeleteModelCollection", context, lambda: server._delete_collection(request)
            )

        def ListModel(self, request: Any, context: Any) -> Any:
            return server._handle("ListModel", context, lambda: server._list(request))

    return Servicer()
