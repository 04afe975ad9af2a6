"""Where Michelangelo Model objects go: the manifest backend, and choosing a backend.

The interface every backend implements, :class:`Backend`, is in ``_interface``;
:func:`open_backend` constructs the chosen one (the ``apiserver`` and ``kubernetes``
modules import their optional dependencies only when a backend is constructed).

Backends: ``apiserver`` (Michelangelo Model API over gRPC), ``kubernetes`` (custom
objects), ``manifest`` (YAML files or stdout), ``off``. ``auto`` picks ``apiserver``
when ``MA_API_SERVER`` is set, else ``kubernetes`` when in a pod or a kubeconfig
exists, else nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from michelangelo_mlflow._registry._apiserver import ApiServerBackend
from michelangelo_mlflow._registry._interface import AlreadyExists, Backend
from michelangelo_mlflow._registry._kubernetes import KubernetesBackend
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import ConfigurationError, RegistrationError

__all__ = [
    "AlreadyExists",
    "Backend",
    "ManifestBackend",
    "backend_name",
    "open_backend",
]


class ManifestBackend(Backend):
    """Write each Model as ``<namespace>/<name>.yaml`` under a directory, or to stdout.

    Files are created atomically and never overwritten, so the file system has the
    same create-only semantics as the API server; ``kubectl apply -f DIR -R`` applies
    them. With ``directory="-"`` each object is printed as a YAML document.

    Args:
        directory: The manifest directory, or ``"-"`` for stdout.

    Example:
        >>> backend = ManifestBackend("./michelangelo-models")  # doctest: +SKIP
    """

    name = "manifest"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.location = "stdout" if directory == "-" else str(Path(directory).resolve())

    def path_of(self, namespace: str, name: str) -> Path:
        """The file a Model object is written to."""
        return Path(self.directory) / namespace / f"{name}.yaml"

    def create(self, obj: Mapping[str, Any], *, model_name: str) -> dict[str, Any]:
        text = yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False)
        if self.directory == "-":
            sys.stdout.write("---\n" + text)
            sys.stdout.flush()
            return dict(obj)
        path = self.path_of(obj["metadata"]["namespace"], obj["metadata"]["name"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                os.link(temporary, path)  # atomic and create-only
            finally:
                os.unlink(temporary)
        except FileExistsError:
            raise AlreadyExists(str(path)) from None
        except OSError as exc:
            raise RegistrationError(
                f"could not write the Model manifest {path}: {exc}",
                model_name=model_name,
                fix="set MICHELANGELO_MLFLOW_MANIFEST_DIR to a writable directory, or - for stdout",
            ) from exc
        return dict(obj)

    def get(self, namespace: str, name: str, *, model_name: str) -> dict[str, Any] | None:
        path = self.path_of(namespace, name)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, yaml.YAMLError) as exc:
            raise RegistrationError(
                f"could not read the existing Model manifest {path}: {exc}",
                model_name=model_name,
                fix="remove or repair the file, then retry",
            ) from exc
        return loaded if isinstance(loaded, dict) else {}


def backend_name(settings: Settings) -> str:
    """The backend ``MICHELANGELO_MLFLOW_REGISTRY`` selects, with ``auto`` resolved.

    Returns:
        ``apiserver``, ``kubernetes``, ``manifest``, or ``off`` (``auto`` found nothing).
    """
    if settings.registry_backend != "auto":
        return settings.registry_backend
    if settings.api_server:
        return "apiserver"
    if settings.kubernetes_service_host or _kubeconfig_exists(settings):
        return "kubernetes"
    return "off"


def open_backend(settings: Settings, name: str) -> Backend:
    """Construct the named backend (importing its optional dependencies).

    Raises:
        MissingDependencyError: The backend's extra is not installed.
        ConfigurationError: The backend is not configured.
    """
    if name == "manifest":
        return ManifestBackend(settings.manifest_dir)
    if name == "apiserver":
        return ApiServerBackend(settings)
    if name == "kubernetes":
        return KubernetesBackend(settings)
    raise ConfigurationError(
        "no Michelangelo registry backend is configured, so the Model object cannot be created",
        variable="MICHELANGELO_MLFLOW_REGISTRY",
        fix="set MA_API_SERVER=host:15566 (Model API), or run in a pod / with a "
        "KUBECONFIG (Kubernetes), or set MICHELANGELO_MLFLOW_REGISTRY=manifest to write "
        "YAML; or pass michelangelo=False to register in MLflow only",
    )


def _kubeconfig_exists(settings: Settings) -> bool:
    if settings.kubeconfig:
        return any(
            Path(p).expanduser().is_file() for p in settings.kubeconfig.split(os.pathsep) if p
        )
    return Path("~/.kube/config").expanduser().is_file()
