"""Check, in seconds, that the tracking server is usable before a run starts.

:func:`preflight` runs, in order:

1. **reachability**: ``GET /health`` (no credentials needed);
2. **authentication**: one cheap authenticated REST call
   (``POST /api/2.0/mlflow/experiments/search`` with ``max_results=1``);
3. **version**: ``GET /version`` (plain text; needs credentials under basic auth) and
   the compatibility verdict against the installed client.

Every request has connect and read timeouts (``MICHELANGELO_MLFLOW_PREFLIGHT_TIMEOUT``)
and is retried with jittered exponential backoff, bounded both in attempts
(``..._PREFLIGHT_ATTEMPTS``) and in total seconds for the whole preflight
(``..._PREFLIGHT_DEADLINE``), so a closed port, a host that never answers or a server
that keeps answering 503 becomes a typed error in about five seconds, where MLflow's
defaults take minutes.

Local stores (``sqlite:``, ``file:``, a path) skip the network checks. ``databricks``
URIs probe the workspace (``GET /.well-known/databricks-config``, no credentials) and
authenticate with the workspace's Bearer token; Databricks does not report its MLflow
version, so the verdict is ``not-applicable``.

:func:`ensure_preflight`, called by ``tracking_run`` before each run, caches a passing
report per process, tracking URI and credentials, raises the typed error of the first
failed check, and applies ``MICHELANGELO_MLFLOW_VERSION_POLICY``. A passing report is
also shared with the user's other processes on the host for
``MICHELANGELO_MLFLOW_PREFLIGHT_HOST_TTL`` seconds, and processes that start at once
wait for one check (``_preflight_host.py``).
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import hmac
import logging
import secrets
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import requests

from michelangelo_mlflow._errors import (
    FIX_CREDENTIALS,
    FIX_PERMISSION,
    FIX_TLS,
    FIX_UNREACHABLE,
    first_line,
)
from michelangelo_mlflow._preflight_host import check_once
from michelangelo_mlflow._retry import Budget, retry_call
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow._versions import (
    Verdict,
    client_version,
    mismatch_message,
    pin_for,
    remember_server_version,
    verdict,
)
from michelangelo_mlflow.exceptions import (
    ArtifactStoreError,
    AuthenticationError,
    ConfigurationError,
    MichelangeloMlflowError,
    MichelangeloMlflowWarning,
    PreflightError,
    TrackingServerUnreachableError,
    VersionMismatchError,
)

__all__ = [
    "CheckResult",
    "PreflightReport",
    "artifact_round_trip",
    "ensure_preflight",
    "preflight",
]

logger = logging.getLogger("michelangelo_mlflow.preflight")

CheckName = Literal["reachability", "authentication", "version", "artifacts"]
CheckStatus = Literal["passed", "failed", "warning", "skipped"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses a preflight request retries (the same set MLflow retries)."""

_FIX_DATABRICKS_TOKEN = (
    "set DATABRICKS_TOKEN to a valid personal access token for DATABRICKS_HOST at "
    "pipeline submission time (ma pipeline dev-run ... --env DATABRICKS_TOKEN=<token>), "
    "or fix the token of the profile in ~/.databrickscfg"
)


# --- value objects --------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    """The outcome of one preflight check.

    Attributes:
        name: ``reachability``, ``authentication``, ``version`` (or ``artifacts``, the
            round trip of ``michelangelo-mlflow doctor --artifacts``).
        status: ``passed``, ``failed``, ``warning`` or ``skipped``.
        seconds: How long the check took, retries included.
        detail: What was observed, without credentials.
        fix: What to do when the check did not pass, else ``None``.
        error: The typed error a failed check raises (not part of equality or repr).
    """

    name: CheckName
    status: CheckStatus
    seconds: float
    detail: str
    fix: str | None = None
    error: PreflightError | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class PreflightReport:
    """What the preflight found, as a frozen value object.

    ``None`` means "not checked": local stores skip the network, and a check after a
    failed one does not run.

    Attributes:
        tracking_uri: The tracking URI checked, without credentials.
        reachable: Whether the server answered ``/health``.
        authenticated: Whether an authenticated REST call succeeded.
        server_version: The server's MLflow version, or ``None`` when unknown.
        client_version: The installed MLflow client's version.
        verdict: The compatibility verdict of the two.
        checks: Every check, in the order run.

    Example:
        >>> settings = mm.Settings(tracking_uri="http://127.0.0.1:5000")
        >>> report = mm.preflight(settings)  # doctest: +SKIP
        >>> report.ok, report.verdict.value, report.latencies  # doctest: +SKIP
        (True, 'compatible', {'reachability': 0.004, 'authentication': 0.01, 'version': 0.003})
        >>> report.raise_for_failure()  # doctest: +SKIP
    """

    tracking_uri: str
    reachable: bool | None
    authenticated: bool | None
    server_version: str | None
    client_version: str
    verdict: Verdict
    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        """Whether no check failed (warnings and skipped checks are fine)."""
        return not any(check.status == "failed" for check in self.checks)

    @property
    def latencies(self) -> dict[str, float]:
        """Seconds per check that ran, by check name."""
        return {c.name: c.seconds for c in self.checks if c.status != "skipped"}

    @property
    def fixes(self) -> dict[str, str]:
        """The fix of every check that failed or warned, by check name."""
        return {c.name: c.fix for c in self.checks if c.fix and c.status in {"failed", "warning"}}

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The checks that failed."""
        return tuple(c for c in self.checks if c.status == "failed")

    def raise_for_failure(self) -> PreflightReport:
        """Raise the typed error of the first failed check; return the report otherwise.

        Returns:
            This report, when every check passed, warned or was skipped.

        Raises:
            TrackingServerUnreachableError: The server did not answer.
            AuthenticationError: It rejected the credentials or needs some.
            VersionMismatchError: Client and server are of different major versions.
        """
        for check in self.failures:
            if check.error is not None:
                raise check.error
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report (what ``doctor --json`` prints)."""
        return {
            "tracking_uri": self.tracking_uri,
            "ok": self.ok,
            "reachable": self.reachable,
            "authenticated": self.authenticated,
            "server_version": self.server_version,
            "client_version": self.client_version,
            "verdict": self.verdict.value,
            "checks": [
                {
                    "name": c.name,
                    "status": c.status,
                    "seconds": round(c.seconds, 4),
                    "detail": c.detail,
                    "fix": c.fix,
                }
                for c in self.checks
            ],
        }

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> PreflightReport:
        """The report :meth:`to_dict` made (without the checks' errors).

        Raises:
            KeyError, TypeError, ValueError: ``data`` is not what :meth:`to_dict` makes.
        """
        return cls(
            tracking_uri=str(data["tracking_uri"]),
            reachable=bool(data["reachable"]) if data["reachable"] is not None else None,
            authenticated=(
                bool(data["authenticated"]) if data["authenticated"] is not None else None
            ),
            server_version=data["server_version"] and str(data["server_version"]),
            client_version=str(data["client_version"]),
            verdict=Verdict(data["verdict"]),
            checks=tuple(
                CheckResult(
                    check["name"],
                    check["status"],
                    float(check["seconds"]),
                    str(check["detail"]),
                    check["fix"] and str(check["fix"]),
                )
                for check in data["checks"]
            ),
        )

    def __repr__(self) -> str:
        return (
            f"PreflightReport(tracking_uri={self.tracking_uri!r}, ok={self.ok}, "
            f"reachable={self.reachable}, authenticated={self.authenticated}, "
            f"server_version={self.server_version!r}, client_version={self.client_version!r}, "
            f"verdict={self.verdict.value!r})"
        )


class _RetryableStatus(Exception):
    """An HTTP answer worth retrying (503 …), raised so that tenacity retries it."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        super().__init__(f"HTTP {response.status_code} {response.reason or ''}".strip())


# --- the checks -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """Where and how to send the preflight's requests, and how to name the server."""

    base_url: str
    health_path: str
    auth_headers: Mapping[str, str] = field(repr=False)
    auth: tuple[str, str] | None = field(repr=False)
    verify: bool | str
    databricks: bool
    uri: str
    label: str
    fix_unreachable: str


class _Prober:
    """The preflight's requests to one server, within one deadline; closes its session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.target = _target(settings)
        self.budget = Budget(settings.preflight_deadline)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"michelangelo-mlflow-preflight/{_our_version()}"
        self.session.trust_env = True

    def __enter__(self) -> _Prober:
        return self

    def __exit__(self, *_: object) -> None:
        self.session.close()

    def request(self, method: str, path: str, *, authenticated: bool) -> requests.Response:
        url = self.target.base_url + path

        def once(timeout: float) -> requests.Response:
            response = self.session.request(
                method,
                url,
                json={"max_results": 1} if method == "POST" else None,
                headers=dict(self.target.auth_headers) if authenticated else None,
                auth=self.target.auth if authenticated else None,
                timeout=(timeout, timeout),
                verify=self.target.verify,
                allow_redirects=False,
            )
            if response.status_code in RETRY_STATUSES:
                raise _RetryableStatus(response)
            return response

        return retry_call(
            once,
            attempts=self.settings.preflight_attempts,
            budget=self.budget,
            timeout=self.settings.preflight_timeout,
            on=(_RetryableStatus, requests.ConnectionError, requests.Timeout),
        )


def _run_checks(settings: Settings) -> PreflightReport:
    uri = settings.safe_tracking_uri
    client = client_version()
    if not settings.is_remote:
        skipped = tuple(
            CheckResult(name, "skipped", 0.0, f"local store {uri}: no server to check")
            for name in ("reachability", "authentication", "version")
        )
        return PreflightReport(uri, None, None, None, client, Verdict.NOT_APPLICABLE, skipped)

    checks: list[CheckResult] = []
    with _Prober(settings) as prober:
        reach = _check_reachability(prober, uri)
        checks.append(reach)
        if reach.status == "failed":
            return _report(uri, client, checks, reachable=False)
        auth = _check_authentication(prober, uri)
        checks.append(auth)
        if auth.status == "failed":
            return _report(uri, client, checks, reachable=True, authenticated=False)
        if prober.target.databricks:
            checks.append(
                CheckResult(
                    "version",
                    "skipped",
                    0.0,
                    "Databricks manages the server's MLflow version and does not report it",
                )
            )
            return _report(uri, client, checks, reachable=True, authenticated=True)
        version_check, server = _check_version(prober, uri, client, settings)
        checks.append(version_check)
        return _report(
            uri,
            client,
            checks,
            reachable=True,
            authenticated=True,
            server=server,
            result=verdict(client, server),
        )


def _report(
    uri: str,
    client: str,
    checks: list[CheckResult],
    *,
    reachable: bool,
    authenticated: bool | None = None,
    server: str | None = None,
    result: Verdict | None = None,
) -> PreflightReport:
    if result is None:
        version_skipped = any(c.name == "version" and c.status == "skipped" for c in checks)
        result = Verdict.NOT_APPLICABLE if version_skipped else Verdict.UNKNOWN
    return PreflightReport(uri, reachable, authenticated, server, client, result, tuple(checks))


def _failed(
    name: CheckName,
    seconds: float,
    message: str,
    fix: str,
    *,
    uri: str,
    kind: type[PreflightError] = PreflightError,
    cause: BaseException | None = None,
) -> CheckResult:
    """The one constructor of a failed check and the typed error it raises."""
    error = kind(message, tracking_uri=uri, fix=fix)
    error.__cause__ = cause
    return CheckResult(name, "failed", seconds, message, fix, error)


def _check_reachability(prober: _Prober, uri: str) -> CheckResult:
    path = prober.target.health_path
    start = time.monotonic()
    try:
        response = prober.request("GET", path, authenticated=False)
    except Exception as exc:  # every failure becomes a report entry
        return _unreachable(exc, prober, "reachability", path, time.monotonic() - start)
    seconds = time.monotonic() - start
    detail = f"GET {path} answered HTTP {response.status_code}"
    if not prober.target.databricks and response.text.strip() != "OK":
        detail += " (not MLflow's OK: the next check tells whether this is an MLflow server)"
    return CheckResult("reachability", "passed", seconds, detail)


def _unreachable(
    exc: BaseException, prober: _Prober, name: CheckName, path: str, seconds: float
) -> CheckResult:
    fix = prober.target.fix_unreachable
    if isinstance(exc, requests.exceptions.SSLError):
        reason, fix = _tls_reason(exc, prober.settings)
    elif isinstance(exc, _RetryableStatus):
        reason = f"it kept answering {exc}"
    elif isinstance(exc, requests.ConnectTimeout):
        reason = "the connection timed out"
    elif isinstance(exc, requests.ReadTimeout):
        reason = "it accepted the connection but did not answer in time"
    elif isinstance(exc, requests.ConnectionError):
        reason = _connection_reason(exc)
    else:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
    message = (
        f"{prober.target.label} is unreachable: {reason} (GET {path}, gave up after "
        f"{seconds:.1f} s, at most {prober.settings.preflight_attempts} attempts)"
    )
    return _failed(
        name,
        seconds,
        message,
        fix,
        uri=prober.target.uri,
        kind=TrackingServerUnreachableError,
        cause=exc,
    )


def _tls_reason(exc: BaseException, settings: Settings) -> tuple[str, str]:
    # OpenSSL's words for a TLS hello answered in plain HTTP: "wrong version number"
    # (OpenSSL 1.1 and 3.0/3.1, Python 3.10-3.12 here), "record layer failure" and
    # "packet length too long" (OpenSSL 3.2+). Certificate problems say "certificate".
    text = str(exc).lower()
    plain = ("wrong version number", "record layer failure", "packet length too long")
    if any(marker in text for marker in plain):
        http = settings.safe_tracking_uri.replace("https://", "http://", 1)
        return (
            "it answered in plain HTTP on this port, not HTTPS (this is not a certificate problem)",
            f"use {http}, or the port where the server (or its proxy) terminates TLS",
        )
    return f"TLS certificate verification failed ({first_line(exc)})", FIX_TLS


def _not_mlflow(
    prober: _Prober, name: CheckName, call: str, response: requests.Response, seconds: float
) -> CheckResult:
    kind = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
    sample = " ".join(response.text.split())[:80]
    message = (
        f"{prober.target.uri} answered {call} with HTTP {response.status_code} ({kind}: "
        f"{sample!r}): it does not look like an MLflow tracking server (a proxy's login "
        "page, or a path behind an ingress that is not MLflow's?)"
    )
    fix = (
        "set MLFLOW_TRACKING_URI to the MLflow server's base URL, the one where "
        "/health answers OK and /api/2.0/mlflow/... answer JSON (check the ingress path and "
        "any authenticating proxy in front of it)"
    )
    return _failed(name, seconds, message, fix, uri=prober.target.uri)


def _connection_reason(exc: requests.ConnectionError) -> str:
    # urllib3 1.x/2.x and the OS (glibc, musl) word these; matched loosely on purpose.
    text = str(exc)
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused (nothing listens on that port, or a firewall rejects it)"
    if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "the host name does not resolve (check the URI and the pod's DNS egress)"
    if "timed out" in text:
        return "the connection timed out"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "the server closed the connection without answering"
    return first_line(exc)


def _check_authentication(prober: _Prober, uri: str) -> CheckResult:
    path = "/api/2.0/mlflow/experiments/search"
    start = time.monotonic()
    try:
        response = prober.request("POST", path, authenticated=True)
    except Exception as exc:  # every failure becomes a report entry
        return _unreachable(exc, prober, "authentication", path, time.monotonic() - start)
    seconds = time.monotonic() - start
    status = response.status_code
    method = prober.settings.credential_method
    if 200 <= status < 300:
        if not _is_json_object(response):
            return _not_mlflow(prober, "authentication", f"POST {path}", response, seconds)
        return CheckResult(
            "authentication", "passed", seconds, f"POST {path} answered HTTP {status} ({method})"
        )
    if status not in (401, 403):
        return _not_mlflow(prober, "authentication", f"POST {path}", response, seconds)
    if status == 401:
        message, fix = _unauthenticated_message(prober.target.label, method)
    else:
        message = (
            f"{prober.target.label} denied the credentials ({method}) access to the "
            f"tracking API (POST {path}: HTTP 403)"
        )
        fix = _FIX_DATABRICKS_TOKEN if method == "databricks" else FIX_PERMISSION
    return _failed(
        "authentication", seconds, message, fix, uri=prober.target.uri, kind=AuthenticationError
    )


def _is_json_object(response: requests.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _unauthenticated_message(label: str, method: str) -> tuple[str, str]:
    if method == "none":
        return (
            f"{label} requires credentials and none are set (HTTP 401)",
            FIX_CREDENTIALS,
        )
    if method == "basic":
        return (
            f"{label} rejected the basic-auth credentials (MLFLOW_TRACKING_USERNAME / "
            "MLFLOW_TRACKING_PASSWORD, or user:password@ in the URI): HTTP 401",
            "check the user name and password you pass at submission time: "
            "ma pipeline dev-run ... --env MLFLOW_TRACKING_USERNAME=<user> "
            "--env MLFLOW_TRACKING_PASSWORD=<password>",
        )
    if method == "token":
        return (
            f"{label} rejected the bearer token (MLFLOW_TRACKING_TOKEN): HTTP 401",
            "set MLFLOW_TRACKING_TOKEN to a valid token at submission time "
            "(ma pipeline dev-run ... --env MLFLOW_TRACKING_TOKEN=<token>), or use "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD if the server uses basic auth",
        )
    return (f"{label} rejected the token (DATABRICKS_TOKEN): HTTP 401", _FIX_DATABRICKS_TOKEN)


def _check_version(
    prober: _Prober, uri: str, client: str, settings: Settings
) -> tuple[CheckResult, str | None]:
    start = time.monotonic()
    server: str | None = None
    observed: str
    try:
        response = prober.request("GET", "/version", authenticated=True)
    except Exception as exc:  # a missing version is "unknown", not fatal
        observed = f"GET /version failed: {first_line(exc)}"
    else:
        text = response.text.strip()
        if response.status_code == 200 and _looks_like_version(text):
            server = text
            observed = f"server {server}, client {client}"
        else:
            observed = f"GET /version answered HTTP {response.status_code} without a version"
    seconds = time.monotonic() - start
    remember_server_version(uri, server)
    result = verdict(client, server)
    if result is Verdict.COMPATIBLE:
        return CheckResult("version", "passed", seconds, f"{observed}: compatible"), server
    message, fix = mismatch_message(uri, client, server, result)
    if result is Verdict.INCOMPATIBLE:
        error = VersionMismatchError(
            message,
            tracking_uri=uri,
            client_version=client,
            server_version=server,
            pin=pin_for(server),
            fix=fix,
        )
        return CheckResult("version", "failed", seconds, message, fix, error), server
    detail = message if result is Verdict.CLIENT_NEWER else f"{observed}; {message}"
    return CheckResult("version", "warning", seconds, detail, fix), server


def _looks_like_version(text: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        Version(text)
    except InvalidVersion:
        return False
    return len(text) < 64


def _target(settings: Settings) -> _Target:
    verify: bool | str = True
    if settings.server_cert_path is not None:
        verify = str(settings.server_cert_path)
    if settings.insecure_tls:
        verify = False
    if settings.credential_method == "databricks":
        host, token = _databricks_credentials(settings)
        host = host.rstrip("/")
        return _Target(
            base_url=host,
            health_path="/.well-known/databricks-config",
            auth_headers={"Authorization": f"Bearer {token}"},
            auth=None,
            verify=True,
            databricks=True,
            uri=settings.safe_tracking_uri,
            label=f"the Databricks workspace {host} (MLFLOW_TRACKING_URI="
            f"{settings.safe_tracking_uri})",
            fix_unreachable=(
                f"check DATABRICKS_HOST ({host}) and that this pod may reach the workspace: "
                f"curl {host}/.well-known/databricks-config from the compute namespace; allow "
                "egress to it (NetworkPolicy, proxy settings HTTPS_PROXY/NO_PROXY)"
            ),
        )
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if settings.credential_method == "basic":
        assert settings.username is not None
        assert settings.password is not None
        auth = (settings.username.get_secret_value(), settings.password.get_secret_value())
    elif settings.credential_method == "token":
        assert settings.tracking_token is not None
        headers["Authorization"] = f"Bearer {settings.tracking_token.get_secret_value()}"
    return _Target(
        base_url=settings.effective_tracking_uri.rstrip("/"),
        health_path="/health",
        auth_headers=headers,
        auth=auth,
        verify=verify,
        databricks=False,
        uri=settings.safe_tracking_uri,
        label=f"the MLflow tracking server at {settings.safe_tracking_uri}",
        fix_unreachable=FIX_UNREACHABLE,
    )


def _databricks_credentials(settings: Settings) -> tuple[str, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(settings.effective_tracking_uri)
    profile = parts.netloc  # databricks://PROFILE; bare "databricks" uses the variables
    if not profile:
        assert settings.databricks_host is not None
        assert settings.databricks_token is not None
        return settings.databricks_host, settings.databricks_token.get_secret_value()
    path = Path.home() / ".databrickscfg"
    parser = configparser.ConfigParser()
    parser.read(path)
    if not parser.has_section(profile) and profile != "DEFAULT":
        raise ConfigurationError(
            f"MLFLOW_TRACKING_URI=databricks://{profile} names a profile that is not in {path}",
            variable="MLFLOW_TRACKING_URI",
            fix=f"add a [{profile}] section with host and token to {path}, or use "
            "MLFLOW_TRACKING_URI=databricks with DATABRICKS_HOST and DATABRICKS_TOKEN",
        )
    host = parser.get(profile, "host", fallback="")
    token = parser.get(profile, "token", fallback="")
    if not host or not token:
        raise ConfigurationError(
            f"the Databricks profile [{profile}] in {path} lacks {'host' if not host else 'token'}",
            variable="MLFLOW_TRACKING_URI",
            fix=f"set both host and token in the [{profile}] section of {path}",
        )
    return host, token


# --- the cache and the public entry points ---------------------------------------------
_cache_key_secret = secrets.token_bytes(32)


@dataclass
class _Flight:
    """One server's check in progress: callers that waited for it share its report."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    report: PreflightReport | None = None
    finished: float = 0.0


def _cache_key(settings: Settings) -> tuple[str, str]:
    # The credentials are part of the key (a fixed password must be re-checked), as a
    # keyed digest that is useless outside this process.
    digest = hmac.new(_cache_key_secret, digestmod=hashlib.sha256)
    for value in (settings.credential_method, *settings.secret_values()):
        digest.update(value.encode() + b"\0")
    digest.update(str(settings.databricks_host).encode())
    return settings.effective_tracking_uri, digest.hexdigest()


def preflight(settings: Settings | None = None, *, force: bool = False) -> PreflightReport:
    """Check the tracking server: reachability, credentials, version compatibility.

    The checks run in order and stop at the first failure; the whole preflight is
    bounded by ``settings.preflight_deadline`` seconds. A passing report is cached per
    process, tracking URI and credentials, and shared with this user's other
    processes on the host for ``settings.preflight_host_ttl`` seconds (one check
    in progress on the host is waited for); a failing one is not, so the next call
    checks again. Calls that arrive while a check of the same server runs wait for it
    and share its report, passing or failing (eight threads against a down server
    take one deadline, not eight). Failures are reported, not raised: call
    :meth:`PreflightReport.raise_for_failure` to raise the typed error.

    Args:
        settings: The configuration to check; ``None`` reads the environment.
        force: Run the checks even when a cached report exists.

    Returns:
        The report.

    Raises:
        ConfigurationError: The configuration itself is invalid (before any request).

    Example:
        >>> import michelangelo_mlflow as mm
        >>> report = mm.preflight()  # doctest: +SKIP
        >>> if not report.ok:  # doctest: +SKIP
        ...     print(report.fixes)
        >>> mm.preflight(force=True).raise_for_failure()  # doctest: +SKIP
    """
    if settings is not None and not isinstance(settings, Settings):
        raise ConfigurationError(
            f"preflight(settings=...) takes a michelangelo_mlflow.Settings, not a "
            f"{type(settings).__name__} ({settings!r:.60})",
            variable="settings",
            fix="pass mm.Settings(tracking_uri=...) (or nothing, to read the environment)",
        )
    settings = settings if settings is not None else Settings()
    key = _cache_key(settings)
    arrived = time.monotonic()
    with STATE.lock:
        flight: _Flight = STATE.preflight_flights.setdefault(key, _Flight())
    with flight.lock:  # one check per server at a time: concurrent starters share its result
        if flight.report is not None and flight.finished > arrived:
            return flight.report  # checked while this caller waited (passing or failing)
        if not force:
            with STATE.lock:
                cached: PreflightReport | None = STATE.preflight_reports.get(key)
            if cached is not None:
                return cached
        report = _run_checks(settings) if force else _checked_once_on_host(settings)
        logger.debug("preflight of %s: %r", report.tracking_uri, report)
        flight.report, flight.finished = report, time.monotonic()
        if report.reachable is not False and report.authenticated is not False:
            with STATE.lock:
                STATE.preflight_reports[key] = report
    return report


_SHAREABLE = frozenset({"passed", "warning", "skipped"})
"""The statuses of a shared report's checks."""


def _checked_once_on_host(settings: Settings) -> PreflightReport:
    """The checks, or a passing verdict this user's other processes on the host shared."""
    if not settings.is_remote:
        return _run_checks(settings)
    key = (
        settings.effective_tracking_uri,
        settings.credential_method,
        *settings.secret_values(),
        str(settings.databricks_host),
        str(settings.server_cert_path),
        str(settings.insecure_tls),
        client_version(),
        _our_version(),
    )
    with STATE.lock:
        not_before = STATE.forgotten_at
    return check_once(
        key,
        lambda: _run_checks(settings),
        passed=lambda report: report.to_dict() if report.ok else None,
        restore=lambda shared: _restored(shared, settings),
        ttl=settings.preflight_host_ttl,
        wait=settings.preflight_deadline,
        not_before=not_before,
    )


def _restored(shared: Mapping[str, Any], settings: Settings) -> PreflightReport | None:
    """A shared passing report, with this process's own reachability check.

    The credentials and the version are taken from the report; ``GET /health`` is asked
    again (the cheapest of the three requests), so a server that went down since fails
    this process's preflight in seconds, as without sharing.

    Returns:
        The report, ``None`` when ``shared`` is not a passing report's
        :meth:`PreflightReport.to_dict`.
    """
    try:
        report = PreflightReport._from_dict(shared)
    except (KeyError, TypeError, ValueError):
        return None
    if any(c.status not in _SHAREABLE for c in report.checks):
        return None
    if not report.checks or report.checks[0].name != "reachability":
        return None
    with _Prober(settings) as prober:
        reach = _check_reachability(prober, report.tracking_uri)
    if reach.status == "failed":
        return _report(report.tracking_uri, report.client_version, [reach], reachable=False)
    remember_server_version(report.tracking_uri, report.server_version)
    return dataclasses.replace(report, checks=(reach, *report.checks[1:]))


def ensure_preflight(settings: Settings) -> None:
    """Run the (cached) preflight before a run and raise or warn as configured.

    Does nothing when ``settings.preflight_enabled`` is off. Otherwise raises the typed error
    of an unreachable server or rejected credentials, and applies
    ``settings.version_policy`` to the version verdict: ``strict`` raises
    :class:`VersionMismatchError` for an incompatible or unknown server version,
    ``warn`` warns once per process and server, ``off`` does neither.

    Args:
        settings: The run's configuration.

    Raises:
        TrackingServerUnreachableError: The server did not answer in time.
        AuthenticationError: It rejected the credentials, or needs some.
        VersionMismatchError: Under the ``strict`` policy, for a version skew.
        PreflightError: It does not look like an MLflow tracking server.

    Example:
        >>> ensure_preflight(Settings(tracking_uri="sqlite:///mlflow.db"))  # doctest: +SKIP
    """
    if not settings.preflight_enabled:
        return
    report = preflight(settings)
    for check in report.failures:
        if check.name != "version" and check.error is not None:
            raise check.error
    policy = settings.version_policy
    if policy == "off" or report.verdict in (Verdict.COMPATIBLE, Verdict.NOT_APPLICABLE):
        return
    message, fix = mismatch_message(
        report.tracking_uri, report.client_version, report.server_version, report.verdict
    )
    if policy == "strict" and report.verdict in (Verdict.INCOMPATIBLE, Verdict.UNKNOWN):
        raise VersionMismatchError(
            message,
            tracking_uri=report.tracking_uri,
            client_version=report.client_version,
            server_version=report.server_version,
            pin=pin_for(report.server_version),
            fix=fix,
        )
    key = (report.tracking_uri, report.server_version or "")
    with STATE.lock:
        if key in STATE.version_warnings:
            return
        STATE.version_warnings.add(key)
    warnings.warn(f"{message}; fix: {fix}", MichelangeloMlflowWarning, stacklevel=3)


def _our_version() -> str:
    # Read at import: the distribution lookup scans sys.path (6 ms a preflight).
    from michelangelo_mlflow import __version__

    return __version__


def artifact_round_trip(settings: Settings) -> CheckResult:
    """Write a tiny artifact through the artifact store and read it back (``doctor --artifacts``).

    It creates one run in the configured experiment, writes a text file, downloads it,
    compares, and deletes the run again.

    Args:
        settings: The configuration to check.

    Returns:
        The ``artifacts`` check: passed, or failed with the reason and the fix.
    """
    from michelangelo_mlflow._errors import FIX_ARTIFACTS

    start = time.monotonic()
    try:
        _write_and_read_back(settings)
    except TrackingServerUnreachableError as exc:
        seconds = time.monotonic() - start
        if not _answers_health(settings):
            return CheckResult("artifacts", "failed", seconds, exc.message, exc.fix)
        # The server answers: it is its artifact store that failed (the proxy drops the
        # connection or answers 500 when the store cannot be written).
        detail = (
            f"the tracking server at {settings.safe_tracking_uri} answers, but writing to "
            f"its artifact store failed: {exc.message}"
        )
        return CheckResult("artifacts", "failed", seconds, detail, FIX_ARTIFACTS)
    except MichelangeloMlflowError as exc:
        return CheckResult("artifacts", "failed", time.monotonic() - start, exc.message, exc.fix)
    except Exception as exc:  # anything else on the way to the store is an artifact failure
        detail = f"artifact round trip failed: {type(exc).__name__}: {first_line(exc)}"
        return CheckResult("artifacts", "failed", time.monotonic() - start, detail, FIX_ARTIFACTS)
    seconds = time.monotonic() - start
    return CheckResult("artifacts", "passed", seconds, "wrote and read back a tiny artifact")


def _answers_health(settings: Settings) -> bool:
    try:
        response = requests.get(
            f"{settings.effective_tracking_uri.rstrip('/')}/health",
            timeout=settings.preflight_timeout,
            verify=_target(settings).verify,
        )
    except requests.RequestException:
        return False
    return response.status_code == 200


def _write_and_read_back(settings: Settings) -> None:
    import io
    import tempfile
    from contextlib import redirect_stdout

    from mlflow.tracking import MlflowClient

    from michelangelo_mlflow._errors import FIX_ARTIFACTS, translate
    from michelangelo_mlflow._experiment import experiment_id
    from michelangelo_mlflow._scope import mlflow_scope
    from michelangelo_mlflow._tags import DOCTOR

    uri = settings.safe_tracking_uri
    content = secrets.token_hex(8)
    # MLflow prints a "View run" link to stdout, which would break --json.
    with mlflow_scope(settings), translate(uri), redirect_stdout(io.StringIO()):
        client = MlflowClient(settings.effective_tracking_uri)
        run = client.create_run(
            experiment_id(client, settings, None),
            run_name="michelangelo-mlflow-doctor",
            tags={DOCTOR: "artifact round trip"},
        )
        run_id = run.info.run_id
        try:
            client.log_text(run_id, content, "doctor/round-trip.txt")
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run_id, "doctor/round-trip.txt", tmp)
                read_back = Path(path).read_text()
        finally:
            client.set_terminated(run_id)
            client.delete_run(run_id)
    if read_back != content:
        raise ArtifactStoreError(
            f"the artifact read back from run {run_id} differs from the one written",
            tracking_uri=uri,
            run_id=run_id,
            fix=FIX_ARTIFACTS,
        )
