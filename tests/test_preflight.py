"""The preflight: real servers and real faults, ``responses`` for scripted sequences."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

import michelangelo_mlflow
from michelangelo_mlflow import _preflight
from michelangelo_mlflow._preflight import PreflightReport, ensure_preflight, preflight
from michelangelo_mlflow._retry import Budget, retry_call
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._versions import Verdict, client_version, known_server_version
from michelangelo_mlflow.exceptions import (
    AuthenticationError,
    ConfigurationError,
    MichelangeloMlflowWarning,
    PreflightError,
    TrackingServerUnreachableError,
    VersionMismatchError,
)
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import AlwaysFailing, BlackHole, closed_port
from tests.helpers.processes import end, readline

FAST: dict[str, Any] = {"preflight_timeout": 0.3, "preflight_deadline": 2.0}
FAKE = "https://mlflow.test:5000"


def fake_server(rsps: responses.RequestsMock, version: str | int = "3.17.2") -> None:
    """Script a healthy MLflow server at FAKE that reports ``version`` (int: a status)."""
    rsps.get(f"{FAKE}/health", body="OK")
    rsps.post(f"{FAKE}/api/2.0/mlflow/experiments/search", json={"experiments": []})
    if isinstance(version, int):
        rsps.get(f"{FAKE}/version", status=version, body="Not Found")
    else:
        rsps.get(f"{FAKE}/version", body=version)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


# --- local stores -----------------------------------------------------------------
def test_local_store_skips_every_network_check() -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        report = preflight(Settings(tracking_uri="sqlite:///mlflow.db"))
        assert len(mock.calls) == 0
    assert report.ok
    assert {c.status for c in report.checks} == {"skipped"}
    assert report.reachable is None
    assert report.verdict is Verdict.NOT_APPLICABLE


# --- a real 3.x server ------------------------------------------------------------
def test_real_server_passes_every_check(tracking_server: TrackingServer) -> None:
    report = preflight(Settings(tracking_uri=tracking_server.url))
    assert report.ok
    assert (report.reachable, report.authenticated) == (True, True)
    assert report.server_version == report.client_version == client_version()
    assert report.verdict is Verdict.COMPATIBLE
    assert list(report.latencies) == ["reachability", "authentication", "version"]
    assert report.fixes == {}
    assert report.raise_for_failure() is report


def test_report_is_frozen_with_a_short_repr(tracking_server: TrackingServer) -> None:
    report = preflight(Settings(tracking_uri=tracking_server.url))
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.reachable = False  # type: ignore[misc]
    assert repr(report).startswith("PreflightReport(tracking_uri=")
    assert "checks" not in repr(report)
    assert report.to_dict()["verdict"] == "compatible"


def test_server_version_is_remembered_for_later_errors(tracking_server: TrackingServer) -> None:
    preflight(Settings(tracking_uri=tracking_server.url))
    assert known_server_version(tracking_server.url) == client_version()


def test_tracking_run_runs_the_preflight_once(tracking_server: TrackingServer) -> None:
    from michelangelo_mlflow import tracking_run
    from tests._proxy import FaultProxy

    with FaultProxy(tracking_server.url) as proxy:
        settings = Settings(tracking_uri=proxy.url)
        with tracking_run(experiment="preflight-once", settings=settings):
            pass
        with tracking_run(experiment="preflight-once", settings=settings):
            pass
        first = preflight(settings)
    assert proxy.requests_to("/health") == [200]  # the second run did not check again
    assert proxy.requests_to("/version") == [200]
    assert preflight(settings) is first  # the one report, cached


def test_tracking_run_fails_fast_on_a_closed_port() -> None:
    from michelangelo_mlflow._run import tracking_run

    uri = f"http://127.0.0.1:{closed_port()}"
    with (
        pytest.raises(TrackingServerUnreachableError, match="connection refused"),
        tracking_run(settings=Settings(tracking_uri=uri, **FAST)),
    ):
        pytest.fail("the run must not start")


# --- real faults ------------------------------------------------------------------
def test_closed_port_is_unreachable_with_the_guides_fix() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TrackingServerUnreachableError) as info:
        ensure_preflight(Settings(tracking_uri=uri, **FAST))
    error = info.value
    assert error.tracking_uri == uri
    assert uri in str(error)
    assert "connection refused" in str(error)
    assert "NetworkPolicy" in (error.fix or "")
    assert isinstance(error.__cause__, requests.ConnectionError)


def test_server_that_never_answers_is_unreachable() -> None:
    with BlackHole() as hole:
        report = preflight(Settings(tracking_uri=hole.url, **FAST))
    assert report.reachable is False
    assert "did not answer" in report.checks[0].detail
    assert set(report.fixes) == {"reachability"}
    with pytest.raises(TrackingServerUnreachableError):
        report.raise_for_failure()


@pytest.mark.parametrize("attempts", [1, 3])
def test_server_that_keeps_answering_503_is_retried_then_unreachable(attempts: int) -> None:
    with AlwaysFailing(503) as server:
        settings = Settings(
            tracking_uri=server.url, preflight_attempts=attempts, preflight_deadline=10.0
        )
        report = preflight(settings)
    assert report.reachable is False
    assert "HTTP 503" in report.checks[0].detail
    assert server.requests == ["GET /health"] * attempts


def test_not_an_mlflow_server_is_a_plain_preflight_error() -> None:
    with AlwaysFailing(404) as server:
        report = preflight(Settings(tracking_uri=server.url, **FAST))
    assert report.reachable is True
    assert report.authenticated is False
    with pytest.raises(PreflightError, match="does not look like an MLflow") as info:
        report.raise_for_failure()
    assert type(info.value) is PreflightError


def test_failures_are_not_cached() -> None:
    with AlwaysFailing(503) as server:
        settings = Settings(tracking_uri=server.url, preflight_attempts=1, **FAST)
        preflight(settings)
        preflight(settings)
    assert len(server.requests) == 2


def test_switched_off_preflight_does_not_touch_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_PREFLIGHT", "false")
    with AlwaysFailing(503) as server:
        ensure_preflight(Settings(tracking_uri=server.url))
    assert server.requests == []


# --- scripted sequences -----------------------------------------------------------
def test_transient_503s_are_retried_until_healthy() -> None:
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=OrderedRegistry
    ) as mock:
        mock.get(f"{FAKE}/health", status=503)
        mock.get(f"{FAKE}/health", status=503)
        fake_server(mock)
        report = preflight(Settings(tracking_uri=FAKE))
    assert report.ok
    assert report.reachable is True


def test_attempts_bound_the_retries() -> None:
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=OrderedRegistry
    ) as mock:
        mock.get(f"{FAKE}/health", status=503)
        mock.get(f"{FAKE}/health", status=502)
        report = preflight(Settings(tracking_uri=FAKE, preflight_attempts=2))
    assert report.reachable is False
    assert "HTTP 502" in report.checks[0].detail


def test_deadline_bounds_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    uri = f"http://127.0.0.1:{closed_port()}"  # refuses at once: only the backoff takes time
    start = time.monotonic()
    report = preflight(Settings(tracking_uri=uri, preflight_attempts=10, preflight_deadline=0.35))
    elapsed = time.monotonic() - start
    assert report.reachable is False
    assert "connection refused" in report.checks[0].detail
    retries = [r for r in caplog.records if re.search(r"attempt \d+ failed", r.getMessage())]
    # Backoff 0.1, 0.2, 0.4 s (+ jitter): the 0.35 s budget leaves room for at most 3
    # attempts of 10; ten would back off for more than 5 s.
    assert 1 <= len(retries) + 1 <= 3
    assert elapsed < 2.0


def test_a_passing_report_is_cached_and_force_reruns(rsps: responses.RequestsMock) -> None:
    fake_server(rsps)
    settings = Settings(tracking_uri=FAKE)
    first = preflight(settings)
    assert preflight(settings) is first
    assert len(rsps.calls) == 3
    agents = {c.request.headers["User-Agent"] for c in rsps.calls}
    assert agents == {f"michelangelo-mlflow-preflight/{michelangelo_mlflow.__version__}"}
    again = preflight(settings, force=True)
    assert again is not first
    assert len(rsps.calls) == 6


def test_other_credentials_are_checked_again(rsps: responses.RequestsMock) -> None:
    fake_server(rsps)
    preflight(Settings(tracking_uri=FAKE, tracking_token="one"))
    preflight(Settings(tracking_uri=FAKE, tracking_token="two"))
    assert len(rsps.calls) == 6
    sent = [
        c.request.headers.get("Authorization")
        for c in rsps.calls
        if "search" in (c.request.url or "")
    ]
    assert sent == ["Bearer one", "Bearer two"]


def test_retry_call_reraises_the_last_error_never_retry_error() -> None:
    calls: list[float] = []
    url = f"http://127.0.0.1:{closed_port()}/health"

    def always_fails(timeout: float) -> requests.Response:
        calls.append(timeout)
        try:
            return requests.get(url, timeout=timeout)
        except requests.ConnectionError as exc:
            raise requests.ConnectionError(f"attempt {len(calls)}") from exc

    with pytest.raises(requests.ConnectionError, match="attempt 3") as info:
        retry_call(
            always_fails,
            attempts=3,
            budget=Budget(30),
            timeout=0.5,
            on=(requests.ConnectionError,),
            initial_wait=0.01,
        )
    assert calls == [0.5, 0.5, 0.5]
    assert "Connection refused" in str(info.value.__cause__)  # the real refusal, kept


def test_retry_call_does_not_retry_other_errors() -> None:
    calls: list[float] = []

    def wrong(timeout: float) -> None:
        calls.append(timeout)
        raise ValueError("not retried")

    with pytest.raises(ValueError, match="not retried"):
        retry_call(wrong, attempts=5, budget=Budget(30), timeout=1, on=(OSError,))
    assert len(calls) == 1


# --- credentials against the real basic-auth server --------------------------------
def test_right_basic_credentials_authenticate(auth_server: TrackingServer) -> None:
    report = preflight(
        Settings(
            tracking_uri=auth_server.url,
            tracking_username=auth_server.admin_username,
            tracking_password=auth_server.admin_password,
        )
    )
    assert report.authenticated is True
    # /version needs credentials under basic auth: getting it proves they were sent.
    assert report.server_version == client_version()


def test_credentials_in_the_uri_authenticate_and_are_stripped(
    auth_server: TrackingServer,
) -> None:
    host = auth_server.url.removeprefix("http://")
    uri = f"http://{auth_server.admin_username}:{auth_server.admin_password}@{host}"
    report = preflight(Settings(tracking_uri=uri))
    assert report.authenticated is True
    assert report.tracking_uri == auth_server.url
    assert auth_server.admin_password not in repr(report) + str(report.to_dict())


def test_wrong_password_is_an_authentication_error(auth_server: TrackingServer) -> None:
    settings = Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password="not-the-password",
    )
    with pytest.raises(AuthenticationError, match="rejected the basic-auth") as info:
        ensure_preflight(settings)
    assert "MLFLOW_TRACKING_PASSWORD" in (info.value.fix or "")
    assert "not-the-password" not in str(info.value)


def test_missing_credentials_are_an_authentication_error(auth_server: TrackingServer) -> None:
    with pytest.raises(AuthenticationError, match="requires credentials and none are set") as i:
        ensure_preflight(Settings(tracking_uri=auth_server.url))
    assert "MLFLOW_TRACKING_USERNAME" in (i.value.fix or "")


def test_rejected_token_names_its_variable(auth_server: TrackingServer) -> None:
    with pytest.raises(AuthenticationError, match="MLFLOW_TRACKING_TOKEN"):
        ensure_preflight(Settings(tracking_uri=auth_server.url, tracking_token="nope"))


# --- version policy ---------------------------------------------------------------
# Against another major version: tests/compat/test_mlflow2.py, with a real MLflow 2.22
# server. Here: what no real server of this session can show.


def test_unreported_version_is_unknown_never_compatible(rsps: responses.RequestsMock) -> None:
    fake_server(rsps, 404)
    report = preflight(Settings(tracking_uri=FAKE))
    assert report.server_version is None
    assert report.verdict is Verdict.UNKNOWN
    assert report.checks[-1].status == "warning"
    with pytest.raises(VersionMismatchError, match="did not report its MLflow version"):
        ensure_preflight(Settings(tracking_uri=FAKE, version_policy="strict"))


def test_newer_client_in_the_same_major_only_warns_even_when_strict(
    rsps: responses.RequestsMock,
) -> None:
    fake_server(rsps, "3.0.0")
    with pytest.warns(MichelangeloMlflowWarning, match="newer than the tracking server"):
        ensure_preflight(Settings(tracking_uri=FAKE, version_policy="strict"))


def test_run_scope_bounded_retries_survive_a_503_burst() -> None:
    from mlflow.tracking import MlflowClient

    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=OrderedRegistry
    ) as mock:
        url = f"{FAKE}/api/2.0/mlflow/experiments/get"
        mock.get(url, status=503)
        mock.get(url, status=503)
        mock.get(url, json={"experiment": {"experiment_id": "0", "name": "Default"}})
        settings = Settings(tracking_uri=FAKE, http_backoff_factor=0)
        with mlflow_scope(settings):
            experiment = MlflowClient().get_experiment("0")
    assert experiment.name == "Default"


# --- Databricks -------------------------------------------------------------------
DATABRICKS = "https://adb-123.azuredatabricks.net"


def test_databricks_uses_its_paths_and_the_bearer_token(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{DATABRICKS}/.well-known/databricks-config", json={})
    rsps.post(f"{DATABRICKS}/api/2.0/mlflow/experiments/search", json={"experiments": []})
    settings = Settings(
        tracking_uri="databricks", databricks_host=DATABRICKS, databricks_token="dapi-token"
    )
    report = preflight(settings)
    probe, search = rsps.calls
    assert "Authorization" not in probe.request.headers
    assert search.request.headers["Authorization"] == "Bearer dapi-token"
    assert report.ok
    assert report.verdict is Verdict.NOT_APPLICABLE
    assert report.checks[-1].status == "skipped"


def test_databricks_rejected_token_names_databricks_token(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{DATABRICKS}/.well-known/databricks-config", status=404)
    rsps.post(f"{DATABRICKS}/api/2.0/mlflow/experiments/search", status=401)
    settings = Settings(
        tracking_uri="databricks", databricks_host=DATABRICKS, databricks_token="dapi-bad"
    )
    with pytest.raises(AuthenticationError, match="DATABRICKS_TOKEN") as info:
        ensure_preflight(settings)
    assert "dapi-bad" not in str(info.value)


def test_databricks_profile_is_read_from_databrickscfg(
    rsps: responses.RequestsMock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".databrickscfg").write_text(f"[ml]\nhost = {DATABRICKS}\ntoken = dapi-profile\n")
    rsps.get(f"{DATABRICKS}/.well-known/databricks-config", json={})
    rsps.post(f"{DATABRICKS}/api/2.0/mlflow/experiments/search", json={})
    assert preflight(Settings(tracking_uri="databricks://ml")).ok
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer dapi-profile"


def test_databricks_unknown_profile_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"databricks://nope") as info:
        preflight(Settings(tracking_uri="databricks://nope"))
    assert info.value.variable == "MLFLOW_TRACKING_URI"


# --- TLS --------------------------------------------------------------------------
def test_server_cert_path_is_used_to_verify(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    target = _preflight._target(
        Settings(tracking_uri="https://mlflow.example.com", server_cert_path=bundle)
    )
    assert target.verify == str(bundle)


def test_report_type_is_exported_from_the_module() -> None:
    assert _preflight.__all__ == sorted(_preflight.__all__)
    assert isinstance(preflight(Settings(tracking_uri="sqlite:///x.db")), PreflightReport)


# --- the TrackingServer test helper's own robustness -------------------------------------


def test_tracking_server_knows_whether_its_own_processes_listen_on_a_port() -> None:
    from michelangelo_mlflow.testing import _tracking_server

    listener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as TrackingServer starts mlflow
    )
    try:
        assert listener.stdout is not None
        port = int(readline(listener.stdout, timeout=30))
        with BlackHole() as other:  # listening in this process: not the child's group
            assert _tracking_server._serves_port(listener.pid, port) is True
            assert _tracking_server._serves_port(listener.pid, other.port) is False
            assert _tracking_server._serves_port(os.getpid(), port) is False
        assert _tracking_server._serves_port(listener.pid, closed_port()) is False
    finally:
        end(listener)


@pytest.mark.slow
def test_tracking_server_moves_on_when_another_process_took_its_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from michelangelo_mlflow.testing import _tracking_server

    # The race made certain: the first "free" port is held by a server that answers
    # every request, /health included, with 200.
    with AlwaysFailing(200) as squatter:
        ports = iter([squatter.port])
        free_port = _tracking_server._free_port
        monkeypatch.setattr(_tracking_server, "_free_port", lambda: next(ports, 0) or free_port())
        with TrackingServer(tmp_path / "server") as server:
            assert server.port != squatter.port
            assert "GET /health" in squatter.requests  # asked, and not believed
            assert preflight(Settings(tracking_uri=server.url)).ok
            log = server.log_path.read_text()
    assert "address already in use" in log.lower()  # the first attempt lost the port
