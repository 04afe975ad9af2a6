"""Local and pod stores: where MLflow would write, and whether it can and should.

MLflow's local default store (no tracking URI anywhere) is resolved when a
``Settings`` is built, without importing MLflow, by the rule of the installed client:
``sqlite:///<cwd>/mlflow.db`` (MLflow 3.7 and later), unless ``./mlruns`` already holds
experiments (a digit-named folder with a ``meta.yaml``), then the ``file:`` store
``<cwd>/mlruns``; MLflow before 3.7: always ``<cwd>/mlruns``.

A store on this machine's disk (``sqlite:``, ``file:``, a plain path) is refused when it
cannot be written, when the installed MLflow refuses a file store, and inside a remote
task pod (``UF_REMOTE_RUN=1``), whose disk is deleted with the pod.
"""

from __future__ import annotations

import functools
import os
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit
from urllib.request import pathname2url

from packaging.version import InvalidVersion, Version

from michelangelo_mlflow._settings._uri import SET_THE_URI, is_drive, name_value, redact
from michelangelo_mlflow.exceptions import ConfigurationError

if TYPE_CHECKING:
    from michelangelo_mlflow._settings._model import Settings


def check_store(settings: Settings, variable: str) -> None:
    """Refuse a tracking store runs cannot be written to, or would be lost from.

    Args:
        settings: The settings being built (validated fields, before these checks).
        variable: Where the tracking URI came from: its variable or argument name.

    Raises:
        ConfigurationError: No URI in a remote pod, a pod-local store, a file store the
            installed MLflow refuses, or a store this process cannot write.
    """
    uri = settings.tracking_uri
    if uri is None:
        if settings.remote_run:
            raise ConfigurationError(
                "no MLflow tracking URI is set in this remote task pod (UF_REMOTE_RUN=1; "
                "MLFLOW_TRACKING_URI and TRACKING_URI are unset): runs would be "
                "written to the pod's local disk and lost with the pod",
                variable="MLFLOW_TRACKING_URI",
                fix=f"{SET_THE_URI}. (TRACKING_URI, a key of the michelangelo-config "
                "ConfigMap, is read as well if an operator set it.)",
            )
        return
    store = local_store(uri)
    if store is None:
        return
    kind, path = store
    absolute = cwd() / path
    named = name_value(variable, redact(uri))
    if settings.remote_run and not settings.allow_local_store:
        raise ConfigurationError(
            f"{named} is a store on this remote task pod's own disk (UF_REMOTE_RUN=1): "
            "runs would be written to the pod's local disk and lost with the pod",
            variable=variable,
            fix=f"point it at the MLflow tracking server: {SET_THE_URI}. If {absolute} is on "
            "a volume that outlives the pod, set MICHELANGELO_MLFLOW_ALLOW_LOCAL_STORE=true",
        )
    version = _mlflow_version()
    if kind == "file" and _refuses_file_store(version) and not settings.allow_file_store:
        raise ConfigurationError(
            f"{named} is a file store, which the installed MLflow client"
            f"{f' ({version})' if version else ''} refuses: MLflow 3.13 put the file store "
            "in maintenance mode",
            variable=variable,
            fix=f"use {sqlite_uri(absolute / 'mlflow.db')} (mlflow migrate-filestore "
            "copies existing runs into it), or set MLFLOW_ALLOW_FILE_STORE=true",
        )
    problem = _unwritable(absolute, database=kind == "sqlite")
    if problem is not None:
        raise ConfigurationError(
            f"{named} cannot be used: {problem}",
            variable=variable,
            fix=f"name a {'database file' if kind == 'sqlite' else 'directory'} this "
            f"process can create and write, such as {sqlite_uri(cwd() / 'mlflow.db')}"
            ", or remove what is in the way / fix the permissions",
        )


def local_store(uri: str) -> tuple[Literal["sqlite", "file"], Path] | None:
    """The kind and path of a store on this machine's disk, or ``None``.

    For ``sqlite:`` the path is the database file; for ``file:`` and plain paths (which
    MLflow opens as a file store) it is the store's directory.
    """
    if uri == "databricks":
        return None
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme.split("+")[0] == "sqlite":
        path = unquote(parts.path)[1:]  # sqlite:///rel.db -> rel.db, sqlite:////abs -> /abs
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return "sqlite", Path(path)
    if scheme == "file":
        return "file", Path(unquote(parts.path) or ".")
    if scheme == "" or is_drive(scheme):
        return "file", Path(uri)
    return None


def _unwritable(store: Path, *, database: bool) -> str | None:
    """Why MLflow could not create or write a store at ``store``, or ``None``.

    ``store`` is a sqlite database file (``database``) or a file store's directory.
    Nothing is created: the first existing ancestor, where ``mkdir -p`` would start,
    must be a writable directory.
    """
    probe = store.parent if database else store
    try:
        if database and store.exists():
            if store.is_dir():
                return f"{store} is a directory, not a database file"
            if not os.access(store, os.R_OK | os.W_OK):
                return f"{store} cannot be written (no permission)"
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is a file, not a directory (a regular file is in the way)"
    except PermissionError:
        return f"{probe} cannot be reached (no permission)"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} cannot be written (no permission)"
    return None


def sqlite_uri(path: Path) -> str:
    """A sqlite URI for an absolute path, written as MLflow writes its default."""
    prefix = "sqlite://" if sys.platform == "win32" else "sqlite:///"
    return prefix + pathname2url(str(path))


def _holds_runs(mlruns: Path) -> bool:
    """Whether a file store holds experiments: MLflow's test for keeping ./mlruns."""
    try:
        return any(
            entry.is_dir() and entry.name.isdigit() and os.path.lexists(entry / "meta.yaml")
            for entry in mlruns.iterdir()
        )
    except OSError:
        return False


def cwd() -> Path:
    """The working directory, which relative stores and MLflow's default live in."""
    try:
        return Path.cwd()
    except OSError as exc:  # deleted under the process
        raise ConfigurationError(
            f"the working directory cannot be read ({exc.strerror}), so MLflow's local "
            "store has no place",
            variable="MLFLOW_TRACKING_URI",
            fix="set MLFLOW_TRACKING_URI to a tracking server or an absolute sqlite:/// path, "
            "or run from an existing directory",
        ) from None


def mlflow_local_default() -> str:
    """MLflow's local default store in the working directory (see the module docs)."""
    here = cwd()
    mlruns = here / "mlruns"
    version = _mlflow_version()
    if (version is not None and version.release < (3, 7)) or _holds_runs(mlruns):
        return mlruns.as_uri()
    return sqlite_uri(here / "mlflow.db")


def _refuses_file_store(version: Version | None) -> bool:
    return version is None or version.release >= (3, 13)


@functools.cache
def _mlflow_version() -> Version | None:
    """The installed MLflow client's version, from package metadata (no import)."""
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return Version(_dist_version(dist))
        except (PackageNotFoundError, InvalidVersion):
            continue
    return None
