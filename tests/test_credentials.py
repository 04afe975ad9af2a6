"""Credential validation up front, and the canary: a secret never appears anywhere."""

from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import responses
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from michelangelo_mlflow._cli import main
from michelangelo_mlflow._preflight import PreflightReport, ensure_preflight, preflight
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import (
    AuthenticationError,
    ConfigurationError,
    MichelangeloMlflowError,
    MichelangeloMlflowWarning,
    TrackingServerUnreachableError,
)
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import closed_port

T = TypeVar("T")

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


DATABRICKS = {"DATABRICKS_HOST": "https://adb.example.net", "DATABRICKS_TOKEN": "dapi-canary"}


@pytest.mark.parametrize(
    ("uri", "env", "arguments", "named"),
    [
        (
            "databricks",
            {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"},
            {},
            ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
        ),
        ("databricks://ml", {"MLFLOW_TRACKING_TOKEN": "t"}, {}, ("MLFLOW_TRACKING_TOKEN",)),
        (
            "databricks",
            {},
            {"tracking_username": "u", "tracking_password": "p"},
            ("tracking_username", "tracking_password"),
        ),
    ],
    ids=["basic-variables", "token-with-a-profile", "basic-arguments"],
)
def test_databricks_with_another_credential_method_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
    env: dict[str, str],
    arguments: dict[str, str],
    named: tuple[str, ...],
) -> None:
    for name, value in {**DATABRICKS, "MLFLOW_TRACKING_URI": uri, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="two credential methods are set") as info:
        Settings(**arguments)
    error = info.value
    assert error.variable == named[0]
    for name in named:
        assert name in error.message
    assert f"unset {' and '.join(named)}" in (error.fix or "")
    assert "MLFLOW_TRACKING_URI='" + uri in error.message
    assert "dapi-canary" not in str(error)


def test_databricks_alone_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**DATABRICKS, "MLFLOW_TRACKING_URI": "databricks"}.items():
        monkeypatch.setenv(name, value)
    assert Settings().credential_method == "databricks"


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
# Every case runs every public path (settings, preflight, errors, the CLI) with a user
# name and a secret unique to the test, checks that the outcome is the one the case is
# named after, and (in the ``sink`` fixture) that neither value appears in any text
# those paths produced: messages, reprs, fixes, warnings, logs, CLI output.


@dataclass(frozen=True)
class Canary:
    """A basic-auth user name and a secret that no other test uses."""

    user: str
    secret: str

    def fill(self, template: str) -> str:
        return template.format(user=self.user, secret=self.secret)


@dataclass(frozen=True)
class Outcome:
    """What the public paths did with one configuration."""

    settings: Settings | None
    settings_error: ConfigurationError | None
    report: PreflightReport | None
    ensure_error: MichelangeloMlflowError | None
    exit_codes: dict[str, int]  # by CLI command line


class Sink:
    """Everything a secret could leak into during one test."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, *texts: object) -> None:
        self.texts.extend(str(t) for t in texts)

    def error(self, exc: BaseException) -> None:
        seen: set[int] = set()
        pending: list[BaseException | None] = [exc]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            fix = current.fix if isinstance(current, MichelangeloMlflowError) else ""
            self.add(str(current), repr(current), fix)
            pending += [current.__cause__, current.__context__]

    def call(self, fn: Callable[[], T]) -> tuple[T | None, MichelangeloMlflowError | None]:
        """Call ``fn``; record its result or its typed error (any other error fails)."""
        try:
            value = fn()
        except MichelangeloMlflowError as exc:
            self.error(exc)
            return None, exc
        self.add(repr(value))
        return value, None


@pytest.fixture
def canary() -> Canary:
    return Canary(f"canaryuser{uuid.uuid4().hex[:12]}", f"canary{uuid.uuid4().hex}")


@pytest.fixture
def sink(caplog: pytest.LogCaptureFixture, canary: Canary) -> Iterator[Sink]:
    caplog.set_level(logging.DEBUG)
    collected = Sink()
    yield collected
    formatter = logging.Formatter()
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        collected.add(formatter.format(record))
    leaked = [t for t in collected.texts if canary.secret in t or canary.user in t]
    assert leaked == []
    assert collected.texts  # the paths really produced output to check


def _exercise(sink: Sink, canary: Canary) -> Outcome:
    """Every public path with the environment's configuration: settings, preflight, CLI."""
    planted = _canary_variables(canary)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome = _exercise_paths(sink)
        sink.add(*(w.message for w in caught))
    finally:
        # Nothing wrote a secret into os.environ beyond what the test itself planted.
        assert _canary_variables(canary) == planted
    return outcome


def _canary_variables(canary: Canary) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if canary.secret in v or canary.user in v}


def _exercise_paths(sink: Sink) -> Outcome:
    settings, settings_error = sink.call(Settings)
    assert settings_error is None or isinstance(settings_error, ConfigurationError)
    report = ensure_error = None
    if settings is not None:
        sink.add(repr(settings), *(f"{r}" for r in settings.describe()))
        report, _ = sink.call(lambda: preflight(settings, force=True))
        assert report is not None  # a report describes failures; it does not raise them
        for check in report.checks:
            sink.add(repr(check))
            if check.error is not None:
                sink.error(check.error)
        sink.call(lambda: preflight(settings).to_dict())
        _, ensure_error = sink.call(lambda: ensure_preflight(settings))
    runner = CliRunner()
    exit_codes = {}
    for args in (["doctor"], ["doctor", "--json"], ["config"], ["config", "--json"]):
        result = runner.invoke(main, args)
        sink.add(result.output, result.stderr)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # the CLI turns errors into one line; it never crashes
        exit_codes[" ".join(args)] = result.exit_code
    return Outcome(settings, settings_error, report, ensure_error, exit_codes)


DOCTOR_FAILS = {"doctor": 1, "doctor --json": 1, "config": 0, "config --json": 0}
ALL_PASS = {"doctor": 0, "doctor --json": 0, "config": 0, "config --json": 0}
CONFIGURATION_ERROR = {"doctor": 2, "doctor --json": 2, "config": 2, "config --json": 2}


def test_canary_wrong_basic_password(
    sink: Sink, canary: Canary, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_server.create_user(canary.user, f"the-right-one-{uuid.uuid4().hex}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", canary.user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", canary.secret)
    outcome = _exercise(sink, canary)
    assert outcome.report is not None
    assert (outcome.report.reachable, outcome.report.authenticated) == (True, False)
    assert isinstance(outcome.ensure_error, AuthenticationError)
    assert "rejected the basic-auth" in str(outcome.ensure_error)
    assert "MLFLOW_TRACKING_PASSWORD" in (outcome.ensure_error.fix or "")
    assert outcome.exit_codes == DOCTOR_FAILS


def test_canary_token(
    sink: Sink, canary: Canary, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", canary.secret)
    outcome = _exercise(sink, canary)
    assert outcome.settings is not None
    assert outcome.settings.credential_method == "token"
    assert outcome.report is not None
    assert outcome.report.authenticated is False  # basic auth does not take a bearer token
    assert isinstance(outcome.ensure_error, AuthenticationError)
    assert "MLFLOW_TRACKING_TOKEN" in str(outcome.ensure_error)
    assert outcome.exit_codes == DOCTOR_FAILS


@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "rejected"])
def test_canary_in_the_uri(
    sink: Sink,
    canary: Canary,
    auth_server: TrackingServer,
    monkeypatch: pytest.MonkeyPatch,
    accepted: bool,
) -> None:
    password = canary.secret if accepted else f"another-{uuid.uuid4().hex}"
    auth_server.create_user(canary.user, password)
    host = auth_server.url.removeprefix("http://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", canary.fill(f"http://{{user}}:{{secret}}@{host}"))
    outcome = _exercise(sink, canary)
    assert outcome.settings is not None
    assert outcome.settings.credential_method == "basic"
    assert outcome.settings.safe_tracking_uri == auth_server.url
    assert outcome.report is not None
    assert outcome.report.tracking_uri == auth_server.url
    if accepted:  # the credentials were taken out of the URI and sent
        assert outcome.report.ok
        assert outcome.report.authenticated is True
        assert outcome.ensure_error is None
        assert outcome.exit_codes == ALL_PASS
    else:
        assert outcome.report.authenticated is False
        assert isinstance(outcome.ensure_error, AuthenticationError)
        assert "in the URI" in str(outcome.ensure_error)
        assert outcome.exit_codes == DOCTOR_FAILS


def test_canary_unreachable(sink: Sink, canary: Canary, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", canary.user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", canary.secret)
    monkeypatch.setenv("MICHELANGELO_MLFLOW_PREFLIGHT_DEADLINE", "1")
    outcome = _exercise(sink, canary)
    assert outcome.report is not None
    assert outcome.report.reachable is False
    assert isinstance(outcome.ensure_error, TrackingServerUnreachableError)
    assert "connection refused" in str(outcome.ensure_error)
    assert outcome.exit_codes == DOCTOR_FAILS


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MLFLOW_TRACKING_USERNAME": "{user}"}, "MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_PASSWORD": "{secret}"}, "MLFLOW_TRACKING_USERNAME"),
        (
            {
                "MLFLOW_TRACKING_USERNAME": "{user}",
                "MLFLOW_TRACKING_PASSWORD": "{secret}",
                "MLFLOW_TRACKING_TOKEN": "{secret}",
            },
            "MLFLOW_TRACKING_TOKEN",
        ),
        (
            {
                "MLFLOW_TRACKING_URI": "https://{user}:{secret}@m.example.com",
                "MLFLOW_TRACKING_PASSWORD": "{secret}",
            },
            "MLFLOW_TRACKING_URI",
        ),
        ({"MLFLOW_TRACKING_URI": "databricks", "DATABRICKS_TOKEN": "{secret}"}, "DATABRICKS_HOST"),
        (
            {"MLFLOW_TRACKING_URI": "https://{user}:{secret}@m.example.com/ with space"},
            "MLFLOW_TRACKING_URI",
        ),
    ],
    ids=["user-only", "password-only", "two-methods", "twice", "databricks", "not-a-uri"],
)
def test_canary_configuration_errors(
    sink: Sink,
    canary: Canary,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    variable: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    for name, value in env.items():
        monkeypatch.setenv(name, canary.fill(value))
    outcome = _exercise(sink, canary)
    assert isinstance(outcome.settings_error, ConfigurationError)
    assert outcome.settings_error.variable == variable
    assert outcome.report is None
    assert outcome.exit_codes == CONFIGURATION_ERROR


def test_canary_databricks_rejected_token(
    sink: Sink, canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = "https://adb-1.azuredatabricks.net"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", canary.secret)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.get(f"{host}/.well-known/databricks-config", json={})
        mock.post(
            f"{host}/api/2.0/mlflow/experiments/search",
            status=403,
            json={"error_code": "PERMISSION_DENIED"},
        )
        outcome = _exercise(sink, canary)
        sent = {
            c.request.headers.get("Authorization")
            for c in mock.calls
            if "search" in (c.request.url or "")
        }
    assert sent == {f"Bearer {canary.secret}"}
    assert outcome.report is not None
    assert (outcome.report.reachable, outcome.report.authenticated) == (True, False)
    assert isinstance(outcome.ensure_error, AuthenticationError)
    assert "DATABRICKS_TOKEN" in (outcome.ensure_error.fix or "")
    assert outcome.exit_codes == DOCTOR_FAILS


def _canary_run(
    auth_server: TrackingServer, canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Any]:
    """Run ``tracking_run`` as the canary user (EDIT on a fresh experiment); its data."""
    from michelangelo_mlflow._run import tracking_run

    auth_server.create_user(canary.user, canary.secret)
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
            "username": canary.user,
            "resource_type": "experiment",
            "resource_id": experiment_id,
            "permission": "EDIT",
        },
        auth=(auth_server.admin_username, auth_server.admin_password),
        timeout=10,
    ).raise_for_status()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", canary.user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", canary.secret)
    with tracking_run(experiment, params={"alpha": 0.5}, tags={"team": "ml"}) as run:
        pass
    with mlflow_scope(admin_settings):
        return Settings(), MlflowClient().get_run(run.info.run_id).data


def test_canary_successful_run_with_params_and_tags(
    sink: Sink, canary: Canary, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, data = _canary_run(auth_server, canary, monkeypatch)
    sink.add(json.dumps(data.params), json.dumps(data.tags))
    outcome = _exercise(sink, canary)
    assert outcome.report is not None
    assert outcome.report.ok
    assert outcome.ensure_error is None
    assert outcome.exit_codes == ALL_PASS
    assert preflight(settings).ok
    assert data.params == {"alpha": "0.5"}
    assert data.tags["team"] == "ml"


def test_canary_username_is_not_the_runs_mlflow_user_tag(
    canary: Canary, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = _canary_run(auth_server, canary, monkeypatch)
    assert data.tags["team"] == "ml"  # the run is there, with its tags
    assert canary.user not in json.dumps(data.tags)


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
