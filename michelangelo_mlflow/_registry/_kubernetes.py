"""The ``kubernetes`` backend: Model custom objects through the Kubernetes API.

Uses the official ``kubernetes`` client (the ``michelangelo-mlflow[kubernetes]``
extra) with the pod's service account when ``KUBERNETES_SERVICE_HOST`` is set, else
the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``). It needs only the RBAC verbs
``create`` and ``get`` on ``models.michelangelo.api``.

This module is the one boundary where Kubernetes API errors become this SDK's: 409 on
create and 404 on get are control flow; every other failure of a call becomes a
:class:`RegistrationError` naming the server, the verb and the fix.
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

__all__ = ["KubernetesBackend", "from_kubernetes"]

CALL_TIMEOUT = 30.0
"""Seconds one Kubernetes API request may take (capped by the registration timeout)."""


class KubernetesBackend(Backend):
    """Create and read ``models.michelangelo.api/v2`` objects with the Kubernetes API.

    Args:
        settings: ``kubernetes_service_host`` (in-cluster) or ``kubeconfig`` are used.

    Raises:
        MissingDependencyError: The ``kubernetes`` package is not installed.
        ConfigurationError: Neither in-cluster credentials nor a kubeconfig load.
    """

    name = "kubernetes"

    def __init__(self, settings: Settings) -> None:
        try:
            import kubernetes.client
            import kubernetes.config
        except ImportError as exc:
            raise MissingDependencyError(
                "the kubernetes registry backend", "michelangelo-mlflow[kubernetes]"
            ) from exc
        # The client library is only partly typed; it is used through Any here.
        client: Any = kubernetes.client
        config: Any = kubernetes.config
        self._exceptions = client.exceptions
        try:
            if settings.kubernetes_service_host:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
            else:
                api_client = config.new_client_from_config(config_file=settings.kubeconfig)
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            source = (
                "the pod's service account"
                if settings.kubernetes_service_host
                else f"the kubeconfig {settings.kubeconfig or '~/.kube/config'}"
            )
            raise ConfigurationError(
                f"could not load Kubernetes credentials from {source}: {exc}",
                variable="KUBECONFIG",
                fix="point KUBECONFIG at a valid kubeconfig (kubectl config view), mount "
                "the service account token in the pod, or choose another backend with "
                "MICHELANGELO_MLFLOW_REGISTRY",
            ) from exc
        self._client: Any = api_client
        self._api: Any = client.CustomObjectsApi(api_client)
        self.server = str(api_client.configuration.host)
        self.location = f"the Kubernetes API server at {self.server}"
        self.timeout = min(CALL_TIMEOUT, settings.register_timeout)

    def create(self, obj: Mapping[str, Any], *, model_name: str) -> dict[str, Any]:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            created: dict[str, Any] = self._api.create_namespaced_custom_object(
                _model_object.GROUP,
                _model_object.VERSION,
                namespace,
                _model_object.PLURAL,
                dict(obj),
                _request_timeout=self.timeout,
            )
        except self._exceptions.ApiException as exc:
            if exc.status == 409:
                raise AlreadyExists(f"{namespace}/{name}") from exc
            raise self._error(exc, "create", namespace, name, model_name) from exc
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise self._error(exc, "create", namespace, name, model_name) from exc
        return dict(created)

    def get(self, namespace: str, name: str, *, model_name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._api.get_namespaced_custom_object(
                _model_object.GROUP,
                _model_object.VERSION,
                namespace,
                _model_object.PLURAL,
                name,
                _request_timeout=self.timeout,
            )
        except self._exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(exc, "get", namespace, name, model_name) from exc
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise self._error(exc, "get", namespace, name, model_name) from exc
        return dict(found)

    def close(self) -> None:
        self._client.close()

    def _error(
        self, exc: BaseException, verb: str, namespace: str, name: str, model_name: str
    ) -> Exception:
        return from_kubernetes(
            exc,
            server=self.server,
            verb=verb,
            namespace=namespace,
            name=name,
            model_name=model_name,
        )


def from_kubernetes(
    exc: BaseException, *, server: str, verb: str, namespace: str, name: str, model_name: str
) -> MichelangeloMlflowError:
    """Our error for a failed Kubernetes API call on ``models.michelangelo.api``.

    Args:
        exc: A ``kubernetes.client.exceptions.ApiException``, a ``urllib3`` error or
            any other failure of the call.
        server: The Kubernetes API server URL.
        verb: The RBAC verb of the call (``create``, ``get``).
        namespace: The namespace of the Model.
        name: The Model object's name.
        model_name: The registered model name, for the error's attribute.

    Returns:
        A ``RegistrationError`` (not raised).
    """
    status = getattr(exc, "status", None)
    reason = _kubernetes_reason(exc)
    target = f"models.michelangelo.api {namespace}/{name}"
    if status == 401:
        message = f"the Kubernetes API server at {server} rejected the credentials (401)"
        fix = (
            "refresh the kubeconfig credentials (KUBECONFIG), or run in a pod whose "
            "service account token is mounted"
        )
    elif status == 403:
        message = (
            f"the Kubernetes API server at {server} forbids verb {verb!r} on "
            f"models.michelangelo.api in namespace {namespace!r} (403): {reason}"
        )
        fix = (
            f"grant this identity the missing RBAC verb {verb!r} (the registration needs "
            f"create and get on models, apiGroups [michelangelo.api]) in namespace "
            f"{namespace!r} with a Role and RoleBinding, as docs/registration.md shows"
        )
    elif status == 404:
        message = (
            f"the Kubernetes API server at {server} has no namespace {namespace!r} or no "
            f"Model CRD (404): {reason}"
        )
        fix = (
            "pass namespace= an existing Michelangelo project, and check that the CRD is "
            "installed: kubectl get crd models.michelangelo.api"
        )
    elif status in (400, 422):
        message = f"the Kubernetes API server at {server} rejected the object ({status}): {reason}"
        fix = "check the model name and arguments; the server's reason names the field"
    elif isinstance(status, int):
        message = f"the Kubernetes API server at {server} failed ({status}): {reason}"
        fix = "retry the registration; it completes the missing half"
    else:
        message = f"could not reach the Kubernetes API server at {server}: {first_line(exc)}"
        fix = (
            "check KUBECONFIG (or that this runs in a pod with KUBERNETES_SERVICE_HOST set) "
            "and that the API server is reachable"
        )
    return RegistrationError(
        f"could not {verb} {target}: {message}", model_name=model_name, fix=fix
    )


def _kubernetes_reason(exc: BaseException) -> str:
    import json

    body = getattr(exc, "body", None)
    if isinstance(body, bytes | str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return str(body)[:200]
        if isinstance(parsed, dict) and parsed.get("message"):
            return str(parsed["message"])
    return str(getattr(exc, "reason", None) or first_line(exc))
