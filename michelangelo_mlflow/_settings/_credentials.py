"""Credential checks: exactly one method, complete, and not sent in clear text.

The methods are HTTP basic auth (``MLFLOW_TRACKING_USERNAME`` and ``..._PASSWORD``, or
``user:password@`` in an http(s) tracking URI), a bearer token
(``MLFLOW_TRACKING_TOKEN``) and Databricks (``DATABRICKS_HOST`` and
``DATABRICKS_TOKEN``, or a ``databricks://<profile>``). Also here: the Michelangelo API
server's address (``MA_API_SERVER``), the other network endpoint the settings name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from michelangelo_mlflow._settings._sources import where
from michelangelo_mlflow._settings._warnings import warn
from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowWarning

if TYPE_CHECKING:
    from michelangelo_mlflow._settings._model import Settings

_API_SERVER = re.compile(
    r"(?:grpc://|dns:///)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>\d+))?"
)


def check_credentials(s: Settings, origins: Mapping[str, str]) -> None:
    """Refuse incomplete or competing credentials; warn about ones sent unprotected.

    Args:
        s: The settings being built.
        origins: Where each field's value came from ("argument" or its variable).

    Raises:
        ConfigurationError: Half a basic-auth pair, two methods at once (Databricks
            included), incomplete Databricks credentials, or a CA bundle path that is
            not a file.
    """
    uri_variable = where(origins, "tracking_uri")
    _check_basic_pair(s)
    if s.username is not None and s.tracking_token is not None:
        raise ConfigurationError(
            "two credential methods are set: basic auth (MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD or user:password@ in the URI) and a bearer token "
            "(MLFLOW_TRACKING_TOKEN)",
            variable="MLFLOW_TRACKING_TOKEN",
            fix="set exactly one method: unset MLFLOW_TRACKING_TOKEN or the basic-auth pair",
        )
    if s.tracking_uri is not None and s.scheme == "databricks":
        _check_only_databricks(s, origins)
        _check_databricks(s)
        return
    _check_transport(s, uri_variable)


def _check_basic_pair(s: Settings) -> None:
    basic = (s.tracking_username is not None, s.tracking_password is not None)
    if basic[0] == basic[1]:
        return
    given, missing = (
        ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        if basic[0]
        else ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME")
    )
    raise ConfigurationError(
        f"{given} is set but {missing} is not: basic auth needs both",
        variable=missing,
        fix=f"set {missing} as well (ma pipeline dev-run ... --env {missing}=...), "
        f"or unset {given}",
    )


def _check_transport(s: Settings, uri_variable: str) -> None:
    """Warn about credentials over plain http and unverified TLS; check the CA bundle."""
    if s.credential_method in {"basic", "token"} and s.tracking_uri is not None:
        parts = urlsplit(s.tracking_uri)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            warn(
                f"credentials for {s.safe_tracking_uri} ({uri_variable}) travel in clear "
                "text over plain http://; use an https:// tracking URI",
                MichelangeloMlflowWarning,
            )
    if s.insecure_tls:
        warn(
            "MLFLOW_TRACKING_INSECURE_TLS is set: the tracking server's TLS certificate is "
            "not verified; set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle instead",
            MichelangeloMlflowWarning,
        )
    if s.server_cert_path is not None and not s.server_cert_path.is_file():
        raise ConfigurationError(
            f"MLFLOW_TRACKING_SERVER_CERT_PATH names {str(s.server_cert_path)!r}, "
            "which is not a file",
            variable="MLFLOW_TRACKING_SERVER_CERT_PATH",
            fix="point it at the PEM CA bundle that signed the server's certificate",
        )


def _check_only_databricks(s: Settings, origins: Mapping[str, str]) -> None:
    """Refuse basic auth or a bearer token next to a Databricks tracking URI.

    MLflow's Databricks store authenticates with ``DATABRICKS_TOKEN`` (or the
    ``databricks://`` profile) only, so ``MLFLOW_TRACKING_USERNAME``/``..._PASSWORD``
    and ``MLFLOW_TRACKING_TOKEN`` would be ignored without a word, while the docs
    promise exactly one method. An error rather than a warning: whoever set them
    expects them to be used, runs would otherwise be attributed to the token's owner,
    and a Databricks 401 would not name the variables that were really set. Unsetting
    them breaks no setup, since Databricks never reads them.
    """
    fields = ("tracking_username", "tracking_password", "tracking_token")
    ignored = [where(origins, f) for f in fields if getattr(s, f) is not None]
    if not ignored:
        return
    names = " and ".join(ignored)
    uri_variable = where(origins, "tracking_uri")
    raise ConfigurationError(
        f"two credential methods are set: Databricks ({uri_variable}="
        f"{s.safe_tracking_uri!r}) and {names}, which MLflow's Databricks store ignores "
        "(it authenticates with DATABRICKS_TOKEN or the databricks:// profile only)",
        variable=ignored[0],
        fix=f"set exactly one method: unset {names} to track to Databricks, or point "
        f"{uri_variable} at the tracking server those credentials belong to",
    )


def _check_databricks(s: Settings) -> None:
    assert s.tracking_uri is not None
    parts = urlsplit(s.tracking_uri)
    profile = parts.netloc  # bare "databricks" has no netloc (and its path is "databricks")
    if profile:
        return  # databricks://PROFILE: the profile in ~/.databrickscfg holds host and token
    missing = [
        name
        for name, value in (
            ("DATABRICKS_HOST", s.databricks_host),
            ("DATABRICKS_TOKEN", s.databricks_token),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError(
            f"MLFLOW_TRACKING_URI=databricks needs DATABRICKS_HOST and DATABRICKS_TOKEN; "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set",
            variable=missing[0],
            fix="pass both at submission time (ma pipeline dev-run ... "
            "--env DATABRICKS_HOST=https://<workspace> --env DATABRICKS_TOKEN=<token>), "
            "or use MLFLOW_TRACKING_URI=databricks://<profile>",
        )
    if s.databricks_host and not urlsplit(s.databricks_host).scheme == "https":
        raise ConfigurationError(
            f"DATABRICKS_HOST={s.databricks_host!r} is not an https:// URL",
            variable="DATABRICKS_HOST",
            fix="set it to the workspace URL, such as https://<workspace>.azuredatabricks.net",
        )


def check_api_server(value: str | None) -> None:
    """``MA_API_SERVER`` is ``[grpc://|dns:///]host[:port]``; empty means unset.

    Raises:
        ConfigurationError: It is not host[:port], or the port is not 1-65535.
    """
    if not value:
        return
    match = _API_SERVER.fullmatch(value)
    port = match["port"] if match else None
    if match and (port is None or 1 <= int(port) <= 65535):
        return
    raise ConfigurationError(
        f"MA_API_SERVER={value!r} is not host:port"
        + (f" (port {port} is not 1-65535)" if port is not None else ""),
        variable="MA_API_SERVER",
        fix="set it to the API server's host[:port], such as "
        "ma-apiserver.michelangelo:15566 (grpc:// or dns:/// may precede it)",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
