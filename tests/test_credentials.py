"""Credential validation up front, and the canary: a secret never appears anywhere."""

from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from michelangelo_mlflow._cli import main
from michelangelo_mlflow._preflight import ensure_preflight, preflight
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    MichelangeloMlflowWarning,
)
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import closed_port

# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MLFLOW_TRACKING_USERNAME": "u"}, "MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_PASSWORD": "p"}, "MLFLOW_TRACKING_USERNAME"),
        (
            {
                "MLFLOW_TRACKING_USERNAME": "u",
                "MLFLOW_TRACKING_PASSWORD": "p",
                "MLFLOW_TRACKING_TOKEN": "t",
            },
            "MLFLOW_TRACKING_TOKEN",
        ),
        (
            {
                "MLFLOW_TRACKING_URI": "https://u:p@mlflow.example.com",
                "MLFLOW_TRACKING_USERNAME": "u",
            },
            "MLFLOW_TRACKING_URI",
        ),
        ({"MLFLOW_TRACKING_URI": "databricks"}, "DATABRICKS_HOST"),
        (
            {"MLFLOW_TRACKING_URI": "databricks", "DATABRICKS_HOST": "https://adb.example.net"},
            "DATABRICKS_TOKEN",
        ),
    ],
)
def test_exactly_one_credential_method_is_validated_up_front(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    env.setdefault("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert info.value.variable == variable
    named = "tracking URI" if variable == "MLFLOW_TRACKING_URI" else variable
    assert named in str(info.value)


def test_missing_databricks_host_and_token_are_both_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    with pytest.raises(ConfigurationError, match="DATABRICKS_HOST and DATABRICKS_TOKEN"):
        Settings()


def test_credentials_in_the_uri_are_moved_out_of_it() -> None:
    settings = Settings(tracking_uri="https://alice:s3cret@mlflow.example.com/")
    assert settings.credential_method == "basic"
    assert settings.effective_tracking_uri == "https://mlflow.example.com/"
    assert "s3cret" not in repr(settings)
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cret"


def test_basic_auth_over_plain_http_to_another_host_warns() -> None:
    with pytest.warns(MichelangeloMlflowWarning, match="clear text"):
        Settings(
            tracking_uri="http://mlflow.example.com:5000",
            tracking_username="u",
            tracking_password="p",
        )


def test_basic_auth_over_loopback_http_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings(tracking_uri="http://127.0.0.1:5000", tracking_token="t")


def test_insecure_tls_warns_and_a_missing_cert_file_is_an_error(tmp_path: Path) -> None:
    with pytest.warns(MichelangeloMlflowWarning, match="MLFLOW_TRACKING_SERVER_CERT_PATH"):
        Settings(tracking_uri="https://mlflow.example.com", insecure_tls=True)
    with pytest.raises(ConfigurationError) as info:
        Settings(tracking_uri="https://m.example.com", server_cert_path=tmp_path / "none.pem")
    assert info.value.variable == "MLFLOW_TRACKING_SERVER_CERT_PATH"


def test_secrets_leave_os_environ_when_the_scope_ends() -> None:
    settings = Settings(tracking_uri="http://127.0.0.1:5000", tracking_token="scoped-token")
    with mlflow_scope(settings):
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == "scoped-token"
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ


# --- the canary ---------------------------------------------------------------------

CANARY = f"canary{uuid.uuid4().hex}"
CANARY_USER = f"canaryuser{uuid.uuid4().hex[:12]}"


class Sink:
    """Everything a secret could leak into during one test."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, *texts: object) -> None:
        self.texts.extend(str(t) for t in texts)

    def error(self, exc: BaseException) -> None:
        while exc is not None:
            fix = exc.fix if isinstance(exc, MichelangeloMlflowError) else ""
            self.add(str(exc), repr(exc), fix)
            exc = exc.__cause__  # type: ignore[assignment]

    def expect(self, call: Callable[[], object]) -> None:
        try:
            self.add(repr(call()))
        except Exception as exc:  # every failure path is exercised on purpose
            self.error(exc)


@pytest.fixture
def sink(caplog: pytest.LogCaptureFixture) -> Iterator[Sink]:
    caplog.set_level(logging.DEBUG)
    collected = Sink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield collected
    collected.add(*(w.message for w in caught))
    collected.add(caplog.text, *(r.getMessage() for r in caplog.records))
    leaked = [text for text in collected.texts if CANARY in text or CANARY_USER in text]
    assert leaked == []
    assert collected.texts  # the paths really produced output to check


def _exercise(sink: Sink, settings_factory: Callable[[], Settings]) -> None:
    """Every public path with one configuration: settings, preflight, errors, CLI."""
    planted = _canary_variables()
    try:
        _exercise_paths(sink, settings_factory)
    finally:
        # Nothing wrote a secret into os.environ beyond what the test itself planted.
        assert _canary_variables() == planted


def _canary_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if CANARY in v or CANARY_USER in v}


def _exercise_paths(sink: Sink, settings_factory: Callable[[], Settings]) -> None:
    sink.expect(settings_factory)
    try:
        settings = settings_factory()
    except ConfigurationError:
        settings = None
    if settings is not None:
        sink.add(repr(settings), *(f"{r}" for r in settings.describe()))
        sink.expect(lambda: preflight(settings, force=True))
        sink.expect(lambda: preflight(settings).to_dict())
        sink.expect(lambda: ensure_preflight(settings))
    runner = CliRunner()
    for args in (["doctor"], ["doctor", "--json"], ["config"], ["config", "--json"]):
        result = runner.invoke(main, args)
        sink.add(result.output, result.stderr)
        if result.exception and not isinstance(result.exception, SystemExit):
            sink.error(result.exception)


@pytest.fixture
def canary_user(auth_server: TrackingServer) -> str:
    """A basic-auth user whose name and password are canaries, with EDIT on one experiment."""
    admin = (auth_server.admin_username, auth_server.admin_password)
    existing = requests.get(
        f"{auth_server.url}/api/2.0/mlflow/users/get",
        params={"username": CANARY_USER},
        auth=admin,
        timeout=10,
    )
    if existing.status_code != 200:
        auth_server.create_user(CANARY_USER, CANARY)
    return CANARY_USER


def test_canary_wrong_basic_password(
    sink: Sink, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", CANARY_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", CANARY)
    _exercise(sink, Settings)


def test_canary_token(
    sink: Sink, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", CANARY)
    _exercise(sink, Settings)


def test_canary_in_the_uri(
    sink: Sink, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = auth_server.url.removeprefix("http://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{CANARY_USER}:{CANARY}@{host}")
    _exercise(sink, Settings)


def test_canary_unreachable(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", CANARY_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", CANARY)
    monkeypatch.setenv("MICHELANGELO_MLFLOW_PREFLIGHT_DEADLINE", "1")
    _exercise(sink, Settings)


@pytest.mark.parametrize(
    "env",
    [
        {"MLFLOW_TRACKING_USERNAME": CANARY_USER},
        {"MLFLOW_TRACKING_PASSWORD": CANARY},
        {
            "MLFLOW_TRACKING_USERNAME": CANARY_USER,
            "MLFLOW_TRACKING_PASSWORD": CANARY,
            "MLFLOW_TRACKING_TOKEN": CANARY,
        },
        {
            "MLFLOW_TRACKING_URI": f"https://{CANARY_USER}:{CANARY}@m.example.com",
            "MLFLOW_TRACKING_PASSWORD": CANARY,
        },
        {"MLFLOW_TRACKING_URI": "databricks", "DATABRICKS_TOKEN": CANARY},
        {"MLFLOW_TRACKING_URI": f"https://{CANARY_USER}:{CANARY}@m.example.com/ with space"},
    ],
)
def test_canary_configuration_errors(
    sink: Sink, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    env.setdefault("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _exercise(sink, Settings)


def test_canary_databricks_rejected_token(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    host = "https://adb-1.azuredatabricks.net"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", CANARY)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{host}/.well-known/databricks-config", json={})
        mock.post(
            f"{host}/api/2.0/mlflow/experiments/search",
            status=403,
            json={"error_code": "PERMISSION_DENIED"},
        )
        _exercise(sink, Settings)
        assert any(c.request.headers.get("Authorization") == f"Bearer {CANARY}" for c in mock.calls)


def _canary_run(
    auth_server: TrackingServer, canary_user: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Any]:
    """Run ``tracking_run`` as the canary user (EDIT on a fresh experiment); its data."""
    from michelangelo_mlflow._run import tracking_run

    admin_settings = Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=auth_server.admin_password,
    )
    experiment = f"canary-{uuid.uuid4().hex[:8]}"
    with mlflow_scope(admin_settings):
        experiment_id = MlflowClient().create_experiment(experiment)
    requests.post(
        f"{auth_server.url}/api/3.0/mlflow/users/permissions/grant",
        json={
            "username": canary_user,
            "resource_type": "experiment",
            "resource_id": experiment_id,
            "permission": "EDIT",
        },
        auth=(auth_server.admin_username, auth_server.admin_password),
        timeout=10,
    ).raise_for_status()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", canary_user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", CANARY)
    with tracking_run(experiment, params={"alpha": 0.5}, tags={"team": "ml"}) as run:
        pass
    with mlflow_scope(admin_settings):
        return Settings(), MlflowClient().get_run(run.info.run_id).data


def test_canary_successful_run_with_params_and_tags(
    sink: Sink, auth_server: TrackingServer, canary_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, data = _canary_run(auth_server, canary_user, monkeypatch)
    _exercise(sink, Settings)
    assert preflight(settings).ok
    assert data.params["alpha"] == "0.5"
    assert data.tags["team"] == "ml"
    sink.add(json.dumps(data.params), json.dumps(data.tags))


def test_canary_username_is_not_the_runs_mlflow_user_tag(
    auth_server: TrackingServer, canary_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = _canary_run(auth_server, canary_user, monkeypatch)
    assert canary_user not in json.dumps(data.tags)


# --- docs ---------------------------------------------------------------------------
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_docs_mention_every_variable() -> None:
    from michelangelo_mlflow._settings import all_variables

    text = (DOCS / "configuration.md").read_text()
    missing = sorted(v for v in all_variables() if f"`{v}`" not in text)
    assert missing == []


def test_troubleshooting_docs_name_an_existing_error_for_every_guide_row() -> None:
    from michelangelo_mlflow import exceptions

    text = (DOCS / "troubleshooting.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    named = {name for name in exceptions.__all__ if f"`{name}`" in text}
    assert len(rows) >= 5
    assert {
        "TrackingServerUnreachableError",
        "AuthenticationError",
        "MissingDependencyError",
        "ArtifactStoreError",
        "VersionMismatchError",
    } <= named
