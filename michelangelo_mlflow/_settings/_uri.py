"""The tracking URI's form: refuse what MLflow cannot use, and say it without secrets.

A leaf of the settings package: it knows nothing of :class:`Settings`, only URIs and
the name of the argument or variable a URI came from (``variable``), which every
message names. Store checks (is a local store writable?) are in ``_stores``.
"""

from __future__ import annotations

import difflib
import functools
import re
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from michelangelo_mlflow.exceptions import ConfigurationError

HTTP = frozenset({"http", "https"})
DATABASES = frozenset({"postgresql", "mysql", "mssql"})  # sqlite is a local store
SUPPORTED = (
    "http://<host>[:<port>]",
    "https://<host>[:<port>]",
    "databricks",
    "databricks://<profile>",
    "sqlite:///<path>",
    "file:///<path>",
    "postgresql://",
    "mysql://",
    "mssql://",
    "a local path",
)
_HOST_PORT = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):\d+(?:/.*)?"
)
EXAMPLE_URI = "http://mlflow.example.com:5000"
SET_THE_URI = (
    f'set it in the workflow code before the first tracked run, mlflow.set_tracking_uri("'
    f'{EXAMPLE_URI}") or mm.Settings(tracking_uri="{EXAMPLE_URI}"), or pass it when '
    f"submitting the pipeline: ma pipeline dev-run -f pipeline.yaml --env "
    f"MLFLOW_TRACKING_URI={EXAMPLE_URI}"
)
"""Every way to set the tracking URI, in the order a user should consider them."""


def check_uri_form(uri: str, variable: str) -> None:
    """Refuse a tracking URI MLflow cannot use, naming where it came from.

    Args:
        uri: The tracking URI as given (not blank).
        variable: The environment variable it came from, or the argument's name.

    Raises:
        ConfigurationError: The URI is not URI-shaped, has no host or a bad port, or
            has a scheme no MLflow store serves.
    """
    shown = redact(uri)
    named = name_value(variable, shown)
    _check_uri_text(uri, shown, named, variable)
    if uri == "databricks":
        return
    try:
        parts = urlsplit(uri)
        port = parts.port if parts.scheme in HTTP else None
    except ValueError:
        raise ConfigurationError(
            f"{named} has an invalid port or host",
            variable=variable,
            fix=f"use a URI such as {EXAMPLE_URI}",
        ) from None
    scheme = parts.scheme
    if scheme in HTTP and not parts.hostname:
        raise ConfigurationError(
            f"{named} has no host",
            variable=variable,
            fix=f"use a URI such as {EXAMPLE_URI}",
        )
    if scheme in HTTP and port == 0:
        raise ConfigurationError(
            f"{named} has an invalid port",
            variable=variable,
            fix=f"use a URI such as {EXAMPLE_URI}",
        )
    _check_scheme(scheme, shown, named, variable)


def _check_uri_text(uri: str, shown: str, named: str, variable: str) -> None:
    """Refuse what is not URI-shaped at all: spaces, a bare host:port, ``http//``."""
    if any(c.isspace() for c in uri):
        raise ConfigurationError(
            f"{named} is not a URI (it has spaces)",
            variable=variable,
            fix=f"use a URI such as {EXAMPLE_URI}, databricks or sqlite:///mlflow.db",
        )
    if _HOST_PORT.fullmatch(shown) and "://" not in shown:
        raise ConfigurationError(
            f"{named} looks like host:port but has no scheme, so MLflow cannot use it",
            variable=variable,
            fix=f"did you mean http://{shown}? (or https://{shown})",
        )
    for scheme in ("https", "http"):
        if shown.startswith(f"{scheme}//") or (
            shown.startswith(f"{scheme}:/") and not shown.startswith(f"{scheme}://")
        ):
            fixed = f"{scheme}://{shown[len(scheme) :].lstrip(':/')}"
            raise ConfigurationError(
                f"{named} is not a URI: its scheme is not followed by ://",
                variable=variable,
                fix=f"did you mean {fixed}?",
            )


def _check_scheme(scheme: str, shown: str, named: str, variable: str) -> None:
    """Refuse a scheme no MLflow store serves, suggesting the nearest one."""
    if scheme in {"", "databricks", "file"} or is_drive(scheme) or scheme in HTTP:
        return
    if scheme.split("+")[0] in {*DATABASES, "sqlite"} or scheme in _plugin_schemes():
        return
    candidates = ["http", "https", "databricks", "sqlite", "file", *sorted(DATABASES)]
    close = difflib.get_close_matches(scheme, candidates, n=1, cutoff=0.5)
    nearest = close[0] if close else "http"
    rest = shown[len(scheme) + 1 :] if shown.lower().startswith(f"{scheme}:") else shown
    if nearest in {*HTTP, "databricks"}:
        rest = "//" + rest.lstrip("/")
    raise ConfigurationError(
        f"{named} has the unsupported scheme {scheme!r}",
        variable=variable,
        fix=f"did you mean {nearest}:{rest}? MLflow tracks to {', '.join(SUPPORTED)}",
    )


def name_value(variable: str, shown: str) -> str:
    """``VARIABLE='value'``, saying what ``TRACKING_URI`` is."""
    named = f"{variable}={shown!r}"
    return (
        f"{named} (the michelangelo-config ConfigMap key)" if variable == "TRACKING_URI" else named
    )


def is_drive(scheme: str) -> bool:
    """Whether a one-letter "scheme" is a Windows drive letter (a path such as C:/runs)."""
    return len(scheme) == 1 and scheme.isalpha()


@functools.cache
def _plugin_schemes() -> frozenset[str]:
    """Schemes of tracking stores that other packages register with MLflow."""
    return frozenset(ep.name for ep in entry_points(group="mlflow.tracking_store"))


def redact(uri: str) -> str:
    """A URI as it may appear in a message: no ``user:password@``, query or fragment."""
    head, sep, tail = uri.partition("://")
    if not sep:
        head, tail = "", uri
    netloc, slash, path = tail.partition("/")
    path = path.split("?")[0].split("#")[0]
    return f"{head}{sep}{netloc.rpartition('@')[2]}{slash}{path}"
