"""The preflight tells apart what answers on the tracking URI: MLflow, plain HTTP, HTML."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import PreflightError, TrackingServerUnreachableError
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import AlwaysFailing

LOGIN_PAGE = b"<!doctype html><html><body><form>Sign in to the proxy</form></body></html>"


@pytest.fixture
def html_server() -> Iterator[str]:
    """A real HTTP server answering every request 200 with a proxy's login page."""
    with AlwaysFailing(200, body=LOGIN_PAGE, content_type="text/html; charset=utf-8") as server:
        yield server.url


def test_an_html_answer_is_not_an_mlflow_server(html_server: str) -> None:
    report = mm.preflight(mm.Settings(tracking_uri=html_server))
    assert report.reachable is True
    assert report.authenticated is False
    with pytest.raises(PreflightError, match="does not look like an MLflow") as info:
        report.raise_for_failure()
    assert "text/html" in str(info.value)
    assert "Sign in to the proxy" in str(info.value)
    assert "base URL" in str(info.value.fix)


def test_a_tracked_run_on_an_html_answer_fails_before_any_run(html_server: str) -> None:
    with pytest.raises(PreflightError, match="does not look like an MLflow"):
        with mm.tracking_run("html", settings=mm.Settings(tracking_uri=html_server)):
            pass


def test_https_to_a_plain_http_port_is_not_called_a_certificate_problem(
    tracking_server: TrackingServer,
) -> None:
    https = tracking_server.url.replace("http://", "https://")
    report = mm.preflight(mm.Settings(tracking_uri=https, preflight_attempts=1))
    with pytest.raises(TrackingServerUnreachableError) as info:
        report.raise_for_failure()
    assert "plain HTTP on this port, not HTTPS" in str(info.value)
    assert "not a certificate problem" in str(info.value)
    assert f"use {tracking_server.url}" in str(info.value.fix)


@responses.activate
def test_databricks_errors_name_the_workspace_and_its_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = "https://adb-1234.5.azuredatabricks.net"
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-canary-token")
    responses.get(f"{host}/.well-known/databricks-config", body=ConnectionError("refused"))
    report = mm.preflight(mm.Settings(tracking_uri="databricks", preflight_attempts=1))
    with pytest.raises(TrackingServerUnreachableError) as info:
        report.raise_for_failure()
    text = str(info.value)
    assert f"the Databricks workspace {host}" in text
    assert "server at databricks" not in text
    assert f"curl {host}/.well-known/databricks-config" in str(info.value.fix)
    assert "DATABRICKS_HOST" in str(info.value.fix)
    assert "dapi-canary-token" not in text
