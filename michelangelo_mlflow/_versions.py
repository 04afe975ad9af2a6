"""The MLflow client/server compatibility rule.

Same major version: compatible. Client newer than the server within a major: works,
with a warning (new client features may call endpoints the server lacks). Different
major: incompatible, because artifacts and ``log_model`` differ between MLflow 2 and 3
(a 3.x client's ``log_model`` calls ``/api/2.0/mlflow/logged-models``, which a 2.x
server answers with 404). A server that does not report its version is ``unknown``,
never compatible.

The preflight records each server's version with :func:`remember_server_version`, so
that an error raised much later inside a run (the 404 above) can name both versions
and the pin that fixes it.
"""

from __future__ import annotations

import enum
import functools
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from packaging.version import InvalidVersion, Version

from michelangelo_mlflow._dependencies import import_mlflow
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow.exceptions import VersionMismatchError

__all__ = [
    "Verdict",
    "client_version",
    "fetch_server_version",
    "known_server_version",
    "mismatch_message",
    "pin_for",
    "remember_server_version",
    "skew_error",
    "verdict",
]


class Verdict(str, enum.Enum):
    """The compatibility verdict between the installed client and a server.

    Example:
        >>> verdict("3.17.2", "2.22.5")
        <Verdict.INCOMPATIBLE: 'incompatible'>
    """

    COMPATIBLE = "compatible"
    """Same major version, and the client is not newer than the server's minor."""
    CLIENT_NEWER = "client-newer"
    """Same major, client of a newer minor: works, warns."""
    INCOMPATIBLE = "incompatible"
    """Different major versions: ``log_model`` and model registration fail."""
    UNKNOWN = "unknown"
    """The server did not report a (parseable) version; never treated as compatible."""
    NOT_APPLICABLE = "not-applicable"
    """No server to compare with: a local store, or Databricks' managed MLflow."""


def client_version() -> str:
    """The installed MLflow client's version (``mlflow`` or ``mlflow-skinny``).

    Once MLflow is imported, the version of the code that runs; before, the installed
    distribution's, read once per process (that lookup scans every distribution on
    ``sys.path``: 7 ms, which a run's start paid twice, for its preflight and its
    provenance tags).

    Example:
        >>> client_version()  # doctest: +SKIP
        '3.17.2'
    """
    loaded = getattr(sys.modules.get("mlflow"), "__version__", None)
    if isinstance(loaded, str):
        return loaded
    return _installed_version()


@functools.cache
def _installed_version() -> str:
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return _dist_version(dist)
        except PackageNotFoundError:
            continue
    return str(import_mlflow().__version__)  # a source checkout; MissingDependencyError if none


def verdict(client: str, server: str | None) -> Verdict:
    """Apply the compatibility rule.

    Args:
        client: The client version.
        server: The server version, or ``None`` when it reported none.

    Returns:
        The verdict.

    Example:
        >>> verdict("3.17.2", "3.10.0").value
        'client-newer'
    """
    if server is None:
        return Verdict.UNKNOWN
    try:
        c, s = Version(client), Version(server)
    except InvalidVersion:
        return Verdict.UNKNOWN
    if c.major != s.major:
        return Verdict.INCOMPATIBLE
    if c.release[:2] > s.release[:2]:
        return Verdict.CLIENT_NEWER
    return Verdict.COMPATIBLE


def pin_for(server: str | None) -> str | None:
    """The requirement line that matches the client to ``server``'s minor version.

    Args:
        server: The server's version, or ``None``.

    Returns:
        A requirement such as ``mlflow~=2.22.0``, or ``None`` for an unknown version.

    Example:
        >>> pin_for("2.22.5")
        'mlflow~=2.22.0'
    """
    if server is None:
        return None
    try:
        s = Version(server)
    except InvalidVersion:
        return None
    return f"mlflow~={s.major}.{s.minor}.0"


def remember_server_version(tracking_uri: str, server: str | None) -> None:
    """Record a server's version (from the preflight) for later error messages.

    Args:
        tracking_uri: The tracking URI without credentials.
        server: The version the server reported; ``None`` is ignored.
    """
    if server is not None:
        with STATE.lock:
            STATE.server_versions[tracking_uri] = server


def known_server_version(tracking_uri: str) -> str | None:
    """The version remembered for ``tracking_uri``, or ``None``."""
    with STATE.lock:
        return STATE.server_versions.get(tracking_uri)


def fetch_server_version(tracking_uri: str, *, timeout: float = 2.0) -> str | None:
    """Ask an HTTP tracking server for its version, once, quickly; ``None`` on failure.

    Used when an endpoint is missing and the preflight did not run (it was switched
    off). Credentials come from MLflow's own configuration, which the run's scope has
    set, so this works under basic auth too.

    Args:
        tracking_uri: The tracking URI without credentials.
        timeout: Connect and read timeout, in seconds.

    Returns:
        The version text, or ``None`` when the server is not HTTP or did not answer.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        response = http_request(  # type: ignore[no-untyped-call]
            get_default_host_creds(tracking_uri),  # type: ignore[no-untyped-call]
            "/version",
            "GET",
            max_retries=0,
            timeout=timeout,
        )
    except Exception:  # best effort: the caller reports "unknown"
        return None
    text = response.text.strip() if response.status_code == 200 else ""
    try:
        Version(text)
    except InvalidVersion:
        return None
    remember_server_version(tracking_uri, text)
    return text


def skew_error(tracking_uri: str, *, cause: str) -> VersionMismatchError:
    """The error for a call that failed because the server is of another major version.

    Args:
        tracking_uri: The tracking URI without credentials.
        cause: The first line of the original error.

    Returns:
        The error (not raised), naming both versions and the pin.

    Example:
        >>> remember_server_version("http://mlflow:5000", "2.22.5")
        >>> skew_error("http://mlflow:5000", cause="404 on logged-models").pin
        'mlflow~=2.22.0'
    """
    client = client_version()
    server = known_server_version(tracking_uri) or fetch_server_version(tracking_uri)
    pin = pin_for(server) or f"mlflow<{Version(client).major}"
    return VersionMismatchError(
        f"the MLflow tracking server at {tracking_uri} (version {server or 'unknown'}) "
        f"does not have an endpoint the installed MLflow client {client} needs: {cause}",
        tracking_uri=tracking_uri,
        client_version=client,
        server_version=server,
        pin=pin,
        fix=f"pin the client to the server's version: add `{pin}` to the task image's "
        "requirements.txt (or upgrade the tracking server to MLflow "
        f"{Version(client).major}.x)",
    )


def mismatch_message(
    tracking_uri: str, client: str, server: str | None, result: Verdict
) -> tuple[str, str]:
    """The message and fix for a verdict other than compatible.

    Args:
        tracking_uri: The tracking URI without credentials.
        client: The client version.
        server: The server version, or ``None``.
        result: The verdict.

    Returns:
        ``(message, fix)``.
    """
    pin = pin_for(server)
    if result is Verdict.INCOMPATIBLE:
        message = (
            f"the installed MLflow client {client} and the tracking server at "
            f"{tracking_uri} (MLflow {server}) are of different major versions: runs, "
            "params and metrics work, but log_model and register_model will fail"
        )
    elif result is Verdict.CLIENT_NEWER:
        message = (
            f"the installed MLflow client {client} is newer than the tracking server at "
            f"{tracking_uri} (MLflow {server}): new client features may call endpoints "
            "the server does not have"
        )
    else:
        message = (
            f"the tracking server at {tracking_uri} did not report its MLflow version "
            f"(GET /version), so the installed client {client} cannot be checked against it"
        )
    if pin:
        fix = (
            f"add `{pin}` to the task image's requirements.txt, or set "
            "MICHELANGELO_MLFLOW_VERSION_POLICY=off to accept the skew"
        )
    else:
        fix = (
            "ask the operator which MLflow version the server runs and pin `mlflow` to "
            "it, or set MICHELANGELO_MLFLOW_VERSION_POLICY=off (or warn) to go on unchecked"
        )
    return message, fix
