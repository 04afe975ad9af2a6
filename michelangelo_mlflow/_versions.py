"""The MLflow client/server compatibility rule.

Same major version: compatible. Client newer than the server within a major: works,
with a warning (new client features may call endpoints the server lacks). Different
major: incompatible, because artifacts and ``log_model`` differ between MLflow 2 and 3
(a 3.x client's ``log_model`` calls ``/api/2.0/mlflow/logged-models``, which a 2.x
server answers with 404). A server that does not report its version is ``unknown``,
never compatible.
"""

from __future__ import annotations

import enum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from packaging.version import InvalidVersion, Version

from michelangelo_mlflow.exceptions import VersionMismatchError

__all__ = [
    "Verdict",
    "client_version",
    "pin_for",
    "remember_server_version",
    "skew_error",
    "verdict",
]

_known_server_versions: dict[str, str] = {}


class Verdict(str, enum.Enum):
    """The compatibility verdict between the installed client and a server."""

    COMPATIBLE = "compatible"
    CLIENT_NEWER = "client-newer"
    INCOMPATIBLE = "incompatible"
    UNKNOWN = "unknown"
    NOT_APPLICABLE = "not-applicable"


def client_version() -> str:
    """The installed MLflow client's version (``mlflow`` or ``mlflow-skinny``)."""
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return _dist_version(dist)
        except PackageNotFoundError:
            continue
    import mlflow

    return str(mlflow.__version__)


def verdict(client: str, server: str | None) -> Verdict:
    """Apply the compatibility rule.

    Args:
        client: The client version.
        server: The server version, or ``None`` when it reported none.

    Returns:
        The verdict.
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
    """The requirement line that matches the client to ``server``'s minor version."""
    if server is None:
        return None
    try:
        s = Version(server)
    except InvalidVersion:
        return None
    return f"mlflow~={s.major}.{s.minor}.0"


def remember_server_version(tracking_uri: str, server: str | None) -> None:
    """Record a server's version (from the preflight) for later error messages."""
    if server is not None:
        _known_server_versions[tracking_uri] = server


def skew_error(tracking_uri: str, *, cause: str) -> VersionMismatchError:
    """The error for a call that failed because the server is of another major version."""
    client = client_version()
    server = _known_server_versions.get(tracking_uri)
    pin = pin_for(server) if server else f"mlflow<{Version(client).major}"
    return VersionMismatchError(
        f"the MLflow tracking server at {tracking_uri} (version {server or 'unknown'}) "
        f"does not have an endpoint the installed MLflow client {client} needs: {cause}",
        tracking_uri=tracking_uri,
        client_version=client,
        server_version=server,
        pin=pin,
        fix=f"pin the client to the server's major version: add `{pin}` to the task "
        "image's requirements.txt (or upgrade the server)",
    )
