"""Settings: precedence of every source, validation, redaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from michelangelo_mlflow import Settings
from michelangelo_mlflow._settings import DEFAULT_EXPERIMENT, PREFIX, all_variables
from michelangelo_mlflow.exceptions import ConfigurationError

BOTH = {"MLFLOW_TRACKING_URI": "http://mlflow:2", "TRACKING_URI": "http://cm:3"}


@pytest.mark.parametrize(
    ("argument", "env", "expected", "source"),
    [
        ("http://arg:1", BOTH, "http://arg:1", "argument"),
        (None, BOTH, "http://mlflow:2", "MLFLOW_TRACKING_URI"),
        (None, {"TRACKING_URI": "http://cm:3"}, "http://cm:3", "TRACKING_URI"),
        (None, {}, None, "default"),
    ],
)  # fmt: skip
def test_tracking_uri_precedence(
    monkeypatch: pytest.MonkeyPatch,
    argument: str | None,
    env: dict[str, str],
    expected: str | None,
    source: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(tracking_uri=argument)
    assert settings.tracking_uri == expected
    row = next(r for r in settings.describe() if r.name == "tracking_uri")
    assert row.source == source


def test_embedded_default_is_mlflows_local_store(tmp_path: Path) -> None:
    settings = Settings()
    assert not settings.uri_is_set
    assert settings.effective_tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert not settings.is_remote


def test_remote_pod_without_uri_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    with pytest.raises(ConfigurationError, match="lost with the pod") as info:
        Settings()
    assert info.value.variable == "MLFLOW_TRACKING_URI"
    assert "--env MLFLOW_TRACKING_URI=" in str(info.value)
    assert "TRACKING_URI to the michelangelo-config ConfigMap" in str(info.value)


def test_remote_pod_with_configmap_uri_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    monkeypatch.setenv("TRACKING_URI", "http://mlflow.example.com:5000")
    assert Settings().remote_run
    assert Settings().tracking_uri == "http://mlflow.example.com:5000"


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        ("arg-exp", {"MLFLOW_EXPERIMENT_NAME": "env-exp"}, "arg-exp"),
        (None, {"MLFLOW_EXPERIMENT_NAME": "env-exp", "MLFLOW_EXPERIMENT_ID": "7"}, "env-exp"),
        (None, {"MLFLOW_EXPERIMENT_ID": "7"}, "7"),
        (None, {}, DEFAULT_EXPERIMENT),
        (None, {f"{PREFIX}DEFAULT_EXPERIMENT": "team-default"}, "team-default"),
    ],
)
def test_experiment_precedence(
    monkeypatch: pytest.MonkeyPatch, argument: str | None, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings(experiment_name=argument).experiment == expected


def test_michelangelo_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    monkeypatch.setenv("MA_PIPELINE_RUN_NAME", "train-fraud-abc12")
    monkeypatch.setenv("UF_LOCAL_RUN", "1")
    settings = Settings()
    assert (settings.namespace, settings.pipeline_run_name) == ("ml-team", "train-fraud-abc12")
    assert settings.local_run
    assert not settings.remote_run


def test_every_knob_reads_its_prefixed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}PREFLIGHT_ATTEMPTS", "5")
    monkeypatch.setenv(f"{PREFIX}VERSION_POLICY", "strict")
    monkeypatch.setenv(f"{PREFIX}HTTP_MAX_RETRIES", "0")
    settings = Settings()
    assert (settings.preflight_attempts, settings.version_policy, settings.http_max_retries) == (
        5,
        "strict",
        0,
    )
    fields = set(Settings.model_fields)
    assert set(all_variables().values()) == fields  # every field reads a variable
    assert all(Settings.model_fields[name].description for name in fields)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (f"{PREFIX}PREFLIGHT_ATTEMPTS", "many", "valid integer"),
        (f"{PREFIX}PREFLIGHT_TIMEOUT", "-1", "greater than 0"),
        (f"{PREFIX}VERSION_POLICY", "loud", "strict"),
        ("UF_REMOTE_RUN", "maybe", "valid boolean"),
        ("MLFLOW_TRACKING_URI", "http://", "has no host"),
        ("MLFLOW_TRACKING_URI", "not a uri", "not a URI"),
        ("MLFLOW_TRACKING_URI", "http://host:notaport", "invalid port"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=message) as info:
        Settings()
    assert info.value.variable == variable
    assert info.value.fix


def test_unknown_prefixed_variable_suggests_the_right_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}PREFLIGT", "0")
    with pytest.raises(ConfigurationError, match=f"did you mean {PREFIX}PREFLIGHT"):
        Settings()


def test_unknown_keyword_argument_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="tracking_ur"):
        Settings(tracking_ur="http://x:1")


def test_repr_and_describe_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice-canary")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-canary")
    settings = Settings(tracking_uri="https://mlflow.example.com")
    assert isinstance(settings.password, SecretStr)
    shown = repr(settings) + str(settings) + repr(settings.describe())
    assert "canary" not in shown
    assert settings.password.get_secret_value() == "hunter2-canary"


def test_credentials_in_the_uri_are_moved_out() -> None:
    settings = Settings(tracking_uri="https://bob:s3cr%40t@mlflow.example.com/path")
    assert settings.effective_tracking_uri == "https://mlflow.example.com/path"
    assert settings.credential_method == "basic"
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cr@t"
    assert "s3cr" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.preflight = False  # type: ignore[misc]


def test_settings_do_not_touch_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = dict(os.environ)
    Settings(tracking_uri="http://u:p@127.0.0.1:5000")
    assert dict(os.environ) == before
