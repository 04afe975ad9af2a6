"""Settings: declared sources and their precedence, validation, redaction, renames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from packaging.version import Version
from pydantic import SecretStr
from urllib3.exceptions import ConnectTimeoutError
from urllib3.util.retry import Retry

from michelangelo_mlflow import Settings
from michelangelo_mlflow._settings import (
    DEFAULT_EXPERIMENT,
    PREFIX,
    SettingSource,
    _stores,
    all_variables,
    variables_of,
)
from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowWarning

BOTH = {"MLFLOW_TRACKING_URI": "http://mlflow:2", "TRACKING_URI": "http://cm:3"}
SECRET = "s3cret-canary"
EXAMPLE = "http://mlflow.example.com:5000"


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def make(**arguments: Any) -> Settings:
    """``Settings(**arguments)`` for parametrized keyword names."""
    return Settings(**arguments)


def source_of(settings: Settings, field: str) -> str:
    return next(r.source for r in settings.describe() if r.name == field)


def refused(
    build: Callable[[], object],
    *,
    variable: str,
    names: tuple[str, ...] = (),
    fix: tuple[str, ...] = (),
    match: str | None = None,
) -> ConfigurationError:
    """Build, expect a ConfigurationError blaming ``variable``; check its text."""
    with pytest.raises(ConfigurationError, match=match) as info:
        build()
    error = info.value
    assert error.variable == variable
    assert error.fix
    assert variable in error.message
    for text in names:
        assert text in error.message, (text, error.message)
    for text in fix:
        assert text in error.fix, (text, error.fix)
    assert SECRET not in str(error) + repr(error) + error.fix
    return error


def given(source: str, value: str) -> Callable[[pytest.MonkeyPatch], Settings]:
    """A builder that takes the tracking URI from ``source``: a variable or the argument."""

    def build(monkeypatch: pytest.MonkeyPatch) -> Settings:
        if source == "tracking_uri":
            return Settings(tracking_uri=value)
        monkeypatch.setenv(source, value)
        return Settings()

    return build


URI_SOURCES = ["MLFLOW_TRACKING_URI", "TRACKING_URI", "tracking_uri"]


# --- 1. declared sources and their precedence ---------------------------------------


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
    set_env(monkeypatch, env)
    settings = Settings(tracking_uri=argument)
    assert settings.tracking_uri == expected
    assert source_of(settings, "tracking_uri") == source


def test_only_two_sources_are_declared_and_init_is_pydantic_settings_own() -> None:
    assert "__init__" not in vars(Settings)
    assert "settings_customise_sources" in vars(Settings)
    # A .env file in the working directory is not a source.
    Path(".env").write_text("MLFLOW_TRACKING_URI=http://dotenv:1\n")
    assert Settings().tracking_uri is None


@pytest.mark.parametrize(
    ("field", "argument", "variable", "value"),
    [
        ("experiment_name", None, "MLFLOW_EXPERIMENT_NAME", "env-exp"),
        ("namespace", None, "MA_NAMESPACE", "ml-team"),
        ("preflight_attempts", None, f"{PREFIX}PREFLIGHT_ATTEMPTS", 5),
        ("version_policy", "strict", f"{PREFIX}VERSION_POLICY", "strict"),
    ],
)
def test_none_as_a_keyword_means_not_given(
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    argument: object,
    variable: str,
    value: object,
) -> None:
    monkeypatch.setenv(variable, str(value))
    from_env = make(**{field: None})
    assert getattr(from_env, field) == value
    assert source_of(from_env, field) == variable
    if argument is not None:
        monkeypatch.setenv(variable, "off")
        from_argument = make(**{field: argument})
        assert getattr(from_argument, field) == argument
        assert source_of(from_argument, field) == "argument"


def test_describe_comes_from_the_sources_not_from_os_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKING_URI", "http://cm:3")
    monkeypatch.setenv(f"{PREFIX}PREFLIGHT_ATTEMPTS", "5")
    settings = Settings(namespace="ml-team")
    # The environment changes after the settings were built: describe() still tells
    # where each value came from when they were.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://later:4")
    monkeypatch.delenv(f"{PREFIX}PREFLIGHT_ATTEMPTS")
    monkeypatch.setenv("MA_NAMESPACE", "other")
    rows = {row.name: row for row in settings.describe()}
    assert rows["tracking_uri"] == SettingSource(
        "tracking_uri", "http://cm:3", "TRACKING_URI", ("MLFLOW_TRACKING_URI", "TRACKING_URI")
    )
    assert (rows["preflight_attempts"].value, rows["preflight_attempts"].source) == (
        "5",
        f"{PREFIX}PREFLIGHT_ATTEMPTS",
    )
    assert (rows["namespace"].value, rows["namespace"].source) == ("ml-team", "argument")
    assert (rows["version_policy"].value, rows["version_policy"].source) == ("warn", "default")


def test_model_validate_counts_its_keys_as_arguments() -> None:
    settings = Settings.model_validate({"tracking_uri": "http://h:1", "namespace": "ns"})
    assert source_of(settings, "namespace") == "argument"
    assert source_of(settings, "caller") == "default"


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        ("arg-exp", {"MLFLOW_EXPERIMENT_NAME": "env-exp"}, "arg-exp"),
        (None, {"MLFLOW_EXPERIMENT_NAME": "env-exp", "MLFLOW_EXPERIMENT_ID": "7"}, "env-exp"),
        (None, {"MLFLOW_EXPERIMENT_ID": "7"}, "7"),
        (None, {}, "Default"),
        (None, {f"{PREFIX}DEFAULT_EXPERIMENT": "team-default"}, "team-default"),
    ],
)
def test_experiment_precedence(
    monkeypatch: pytest.MonkeyPatch, argument: str | None, env: dict[str, str], expected: str
) -> None:
    set_env(monkeypatch, env)
    assert Settings(experiment_name=argument).experiment == expected
    assert DEFAULT_EXPERIMENT == "Default"


def test_michelangelo_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    monkeypatch.setenv("MA_PIPELINE_RUN_NAME", "train-fraud-abc12")
    monkeypatch.setenv("UF_LOCAL_RUN", "1")
    settings = Settings()
    assert (settings.namespace, settings.pipeline_run_name) == ("ml-team", "train-fraud-abc12")
    assert settings.local_run
    assert not settings.remote_run


RENAMED = {"preflight_enabled": "PREFLIGHT", "registry_backend": "REGISTRY"}
RENAMED["pipeline_run_mode"] = "PIPELINE_RUN"


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_own_variables_are_named_by_the_alias_generator(field: str) -> None:
    variables = variables_of(field)
    assert variables, f"{field} reads no variable"
    assert Settings.model_fields[field].description
    ours = [v for v in variables if v.startswith(PREFIX)]
    if ours:
        assert ours == [PREFIX + RENAMED.get(field, field.upper())]
    else:
        assert not variables[0].startswith(PREFIX)


def test_every_field_reads_a_variable_and_the_own_ones_are_known() -> None:
    assert set(all_variables().values()) == set(Settings.model_fields)
    assert f"{PREFIX}SPOOL_MAX_BYTES" in all_variables()
    assert all_variables()["MLFLOW_ALLOW_FILE_STORE"] == "allow_file_store"


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


def test_lowercase_field_names_are_not_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("namespace", "from-a-stray-variable")
    monkeypatch.setenv("tracking_uri", "http://stray:1")
    settings = Settings()
    assert (settings.namespace, settings.tracking_uri) == (None, None)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (f"{PREFIX}PREFLIGHT_ATTEMPTS", "many", "valid integer"),
        (f"{PREFIX}PREFLIGHT_ATTEMPTS", "11", "less than or equal to 10"),
        (f"{PREFIX}PREFLIGHT_TIMEOUT", "-1", "greater than 0"),
        (f"{PREFIX}VERSION_POLICY", "loud", "strict"),
        ("UF_REMOTE_RUN", "maybe", "valid boolean"),
        (f"{PREFIX}SPOOL", "maybe", "'on' or 'off'"),
        (f"{PREFIX}SPOOL_GRACE", "0", "greater than 0"),
        (f"{PREFIX}SPOOL_MAX_BYTES", "1KiB", "greater than or equal to 1048576"),
        (f"{PREFIX}SPOOL_MAX_BYTES", "lots", "byte"),
        (f"{PREFIX}FLUSH_INTERVAL", "0", "greater than 0"),
        (f"{PREFIX}FLUSH_INTERVAL", "61", "less than or equal to 60"),
        (f"{PREFIX}HTTP_MAX_RETRIES", "11", "less than or equal to 10"),
        (f"{PREFIX}HTTP_TIMEOUT", "0", "greater than 0"),
        (f"{PREFIX}HTTP_BACKOFF_FACTOR", "-1", "greater than or equal to 0"),
        ("MLFLOW_TRACKING_URI", "http://", "has no host"),
        ("MLFLOW_TRACKING_URI", "not a uri", "not a URI"),
        ("MLFLOW_TRACKING_URI", "http://host:notaport", "invalid port"),
    ],
)
def test_invalid_values_name_the_variable_and_the_input(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    refused(Settings, variable=variable, names=(repr(value),), match=message)


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("preflight_attempts", "many", "valid integer"),
        ("spool_grace", -1.0, "greater than 0"),
        ("spool", "sometimes", "'on' or 'off'"),
        ("flush_interval", 120, "less than or equal to 60"),
    ],
)
def test_an_invalid_keyword_argument_is_named_as_the_argument(
    keyword: str, value: object, message: str
) -> None:
    refused(lambda: make(**{keyword: value}), variable=keyword, match=message)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        (f"{PREFIX}PREFLIGT", f"{PREFIX}PREFLIGHT"),
        (f"{PREFIX}SPOOL_DIRECTORY", f"{PREFIX}SPOOL_DIR"),
        (f"{PREFIX}FLUSH_INTERVALL", f"{PREFIX}FLUSH_INTERVAL"),
        (f"{PREFIX}PREFLIGHT_ENABLED", f"{PREFIX}PREFLIGHT"),
    ],
)
def test_unknown_prefixed_variable_suggests_the_right_one(
    monkeypatch: pytest.MonkeyPatch, typo: str, meant: str
) -> None:
    monkeypatch.setenv(typo, "0")
    refused(Settings, variable=typo, fix=(f"did you mean {meant}?",))


@pytest.mark.parametrize(
    ("keyword", "meant"), [("tracking_ur", "tracking_uri"), ("spool_grase", "spool_grace")]
)
def test_unknown_keyword_argument_is_rejected_with_a_suggestion(keyword: str, meant: str) -> None:
    refused(lambda: make(**{keyword: "x"}), variable=keyword, fix=(f"did you mean {meant}=",))


# --- 1. MLflow's local default, resolved without MLflow ------------------------------


def test_local_default_is_mlflows_sqlite_store_in_the_working_directory(tmp_path: Path) -> None:
    settings = Settings()
    assert not settings.uri_is_set
    assert settings.effective_tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert settings.effective_tracking_uri == mlflow.get_tracking_uri()  # what MLflow does
    assert not settings.is_remote
    assert settings.scheme == "sqlite"
    assert source_of(settings, "tracking_uri") == "default"


@pytest.mark.parametrize(
    ("layout", "store"),
    [
        ({"mlruns/0/meta.yaml": ""}, "file"),
        ({"mlruns/12/meta.yaml": "", "mlruns/.trash/x": ""}, "file"),
        ({"mlruns/0/other.yaml": ""}, "sqlite"),  # no experiment in it
        ({"mlruns/models/meta.yaml": ""}, "sqlite"),  # not an experiment folder
        ({"mlruns": None}, "sqlite"),  # an empty directory
    ],
)
def test_local_default_keeps_an_mlruns_store_that_holds_experiments(
    tmp_path: Path, layout: dict[str, str | None], store: str
) -> None:
    for relative, text in layout.items():
        path = tmp_path / relative
        if text is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    expected = (
        (tmp_path / "mlruns").as_uri() if store == "file" else f"sqlite:///{tmp_path}/mlflow.db"
    )
    assert Settings().effective_tracking_uri == expected
    assert mlflow.get_tracking_uri() == expected  # the same rule as the installed MLflow


def test_local_default_of_an_mlflow_before_3_7_is_mlruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_stores, "_mlflow_version", lambda: Version("2.22.5"))
    assert Settings().effective_tracking_uri == f"file://{tmp_path}/mlruns"


def test_local_default_is_resolved_once_when_the_settings_are_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert settings.effective_tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert Settings().effective_tracking_uri == f"sqlite:///{elsewhere}/mlflow.db"


def test_settings_do_not_import_mlflow(tmp_path: Path) -> None:
    script = (
        "import sys; from michelangelo_mlflow._settings import Settings; "
        "s = Settings(); print(s.effective_tracking_uri, s.describe()[0].value); "
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", PREFIX))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"sqlite:///{tmp_path}/mlflow.db"] * 2


# --- 2. renames, with deprecation aliases --------------------------------------------

OLD_NAMES = [
    ("preflight", "preflight_enabled", False, "PREFLIGHT", "0"),
    ("registry", "registry_backend", "manifest", "REGISTRY", "manifest"),
    ("pipeline_run", "pipeline_run_mode", "nested", "PIPELINE_RUN", "nested"),
]


@pytest.mark.parametrize(("old", "new", "value", "variable", "env_value"), OLD_NAMES)
def test_renamed_fields_keep_their_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    new: str,
    value: object,
    variable: str,
    env_value: str,
) -> None:
    monkeypatch.setenv(PREFIX + variable, env_value)
    settings = Settings()
    assert getattr(settings, new) == value
    assert source_of(settings, new) == PREFIX + variable
    assert variables_of(new) == (PREFIX + variable,)


@pytest.mark.parametrize(("old", "new", "value", "variable", "env_value"), OLD_NAMES)
def test_reading_an_old_attribute_warns_and_returns_the_new_one(
    old: str, new: str, value: object, variable: str, env_value: str
) -> None:
    settings = make(**{new: value})
    with pytest.warns(DeprecationWarning, match=f"Settings.{old} is deprecated: use {new}") as rec:
        assert getattr(settings, old) == value
    assert rec[0].filename == __file__  # points at the caller's line


@pytest.mark.parametrize(("old", "new", "value", "variable", "env_value"), OLD_NAMES)
def test_passing_an_old_keyword_warns_and_works(
    old: str, new: str, value: object, variable: str, env_value: str
) -> None:
    with pytest.warns(DeprecationWarning, match=rf"Settings\({old}=\.\.\.\) is deprecated") as rec:
        settings = make(**{old: value})
    assert rec[0].filename == __file__
    assert getattr(settings, new) == value
    assert source_of(settings, new) == "argument"
    assert old not in settings.model_dump()


@pytest.mark.parametrize(("old", "new", "value", "variable", "env_value"), OLD_NAMES)
def test_an_old_and_a_new_keyword_together_are_refused(
    old: str, new: str, value: object, variable: str, env_value: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"use {new}"):
        refused(lambda: make(**{old: value, new: value}), variable=new, names=(old, new))


def test_the_sdks_own_modules_are_not_warned_about_old_names() -> None:
    settings = Settings(registry_backend="manifest")
    module = {"__name__": "michelangelo_mlflow._registry._probe", "settings": settings}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert eval("settings.registry", module) == "manifest"


# --- 3. the spool and the HTTP budget ------------------------------------------------

DEFAULTS: dict[str, object] = {
    "default_experiment": "Default",
    "preflight_enabled": True,
    "preflight_timeout": 2.0,
    "preflight_attempts": 3,
    "preflight_deadline": 4.5,
    "preflight_host_ttl": 60.0,
    "version_policy": "warn",
    "http_max_retries": None,
    "http_backoff_factor": None,
    "http_timeout": None,
    "registry_backend": "auto",
    "manifest_dir": "./michelangelo-models",
    "api_server_tls": False,
    "caller": "michelangelo-mlflow",
    "register_timeout": 300.0,
    "on_retry": "new",
    "pipeline_run_mode": "off",
    "worker_context": None,
    "allow_local_store": False,
    "allow_file_store": False,
    "spool": "on",
    "spool_dir": Path(".michelangelo-mlflow-spool"),
    "spool_grace": 30.0,
    "spool_max_bytes": 1024**3,
    "flush_interval": 1.0,
    "senders": 8,
    "api_server_name": "ma-apiserver",
    "tracking_uri": None,
    "remote_run": False,
    "insecure_tls": False,
}


@pytest.mark.parametrize(("field", "default"), sorted(DEFAULTS.items()))
def test_documented_defaults(field: str, default: object) -> None:
    settings = Settings()
    assert getattr(settings, field) == default
    assert source_of(settings, field) == "default"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("SPOOL", "off", "spool", "off"),
        ("SPOOL_DIR", "relative/spool", "spool_dir", Path("relative/spool")),
        ("SPOOL_DIR", "/var/spool/mm", "spool_dir", Path("/var/spool/mm")),
        ("SPOOL_GRACE", "5", "spool_grace", 5.0),
        ("SPOOL_MAX_BYTES", "512MiB", "spool_max_bytes", 512 * 1024**2),
        ("SPOOL_MAX_BYTES", "2GB", "spool_max_bytes", 2 * 1000**3),
        ("SPOOL_MAX_BYTES", "1048576", "spool_max_bytes", 1024**2),
        ("FLUSH_INTERVAL", "0.25", "flush_interval", 0.25),
        ("FLUSH_INTERVAL", "60", "flush_interval", 60.0),
        ("ALLOW_LOCAL_STORE", "true", "allow_local_store", True),
    ],
)
def test_spool_knobs_read_their_variables(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(PREFIX + variable, value)
    settings = Settings()
    assert getattr(settings, field) == expected
    assert source_of(settings, field) == PREFIX + variable


def test_a_relative_spool_dir_is_stored_as_given(tmp_path: Path) -> None:
    settings = Settings(spool_dir="spool")
    assert settings.spool_dir == Path("spool")
    assert not settings.spool_dir.is_absolute()
    assert not (tmp_path / "spool").exists()  # nothing is created while validating


def test_spool_max_bytes_is_described_in_binary_units() -> None:
    row = next(r for r in Settings(spool_max_bytes="512MiB").describe() if r.name.endswith("bytes"))
    assert row.value == "512.0MiB"


@pytest.mark.parametrize(
    ("knobs", "budget"),
    [
        ({}, {"MAX_RETRIES": "5", "BACKOFF_FACTOR": "1", "TIMEOUT": "30"}),
        ({"spool_grace": 1}, {"MAX_RETRIES": "2", "BACKOFF_FACTOR": "1", "TIMEOUT": "10"}),
        ({"spool_grace": 2}, {"MAX_RETRIES": "2", "BACKOFF_FACTOR": "1", "TIMEOUT": "10"}),
        ({"spool_grace": 2.5}, {"MAX_RETRIES": "3", "BACKOFF_FACTOR": "1", "TIMEOUT": "10"}),
        ({"spool_grace": 60}, {"MAX_RETRIES": "6", "BACKOFF_FACTOR": "1", "TIMEOUT": "60"}),
        ({"spool_grace": 90.7}, {"MAX_RETRIES": "7", "BACKOFF_FACTOR": "1", "TIMEOUT": "90"}),
        ({"spool_grace": 5000}, {"MAX_RETRIES": "10", "BACKOFF_FACTOR": "1", "TIMEOUT": "120"}),
        (
            {"http_max_retries": 0, "http_timeout": 7.5},
            {"MAX_RETRIES": "0", "BACKOFF_FACTOR": "1", "TIMEOUT": "8"},
        ),
        ({"http_backoff_factor": 3}, {"MAX_RETRIES": "5", "BACKOFF_FACTOR": "3", "TIMEOUT": "30"}),
        ({"spool": "off"}, {}),
        ({"spool": "off", "spool_grace": 1}, {}),
        ({"spool": "off", "http_max_retries": 2}, {"MAX_RETRIES": "2"}),
        (
            {"spool": "off", "http_max_retries": 3, "http_backoff_factor": 1, "http_timeout": 60},
            {"MAX_RETRIES": "3", "BACKOFF_FACTOR": "1", "TIMEOUT": "60"},
        ),
    ],
)
def test_http_budget(knobs: dict[str, Any], budget: dict[str, str]) -> None:
    expected = {f"MLFLOW_HTTP_REQUEST_{name}": value for name, value in budget.items()}
    assert make(**knobs).http_budget() == expected


def urllib3_sleeps(retries: int) -> list[float]:
    """The backoff urllib3 sleeps before each retry, with backoff factor 1."""
    retry, sleeps = Retry(total=retries, backoff_factor=1, backoff_max=120), []
    for _ in range(retries):
        retry = retry.increment(method="GET", url="/", error=ConnectTimeoutError())
        sleeps.append(retry.get_backoff_time())
    return sleeps


def test_urllib3_sleeps_as_the_budget_assumes() -> None:
    assert urllib3_sleeps(5) == [0, 2, 4, 8, 16]  # 2**n - 2 seconds in all ...
    assert urllib3_sleeps(10)[-4:] == [64, 120, 120, 120]  # ... until one sleep reaches 120


@pytest.mark.parametrize("grace", [0.1, 1, 2, 3, 6, 6.5, 30, 31, 100, 126, 127, 250, 486, 500])
def test_derived_retries_are_the_fewest_whose_backoff_covers_the_grace(grace: float) -> None:
    retries = int(Settings(spool_grace=grace).http_budget()["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    assert 2 <= retries <= 10
    if retries < 10:
        assert sum(urllib3_sleeps(retries)) >= grace > sum(urllib3_sleeps(retries - 1))
    else:
        assert sum(urllib3_sleeps(9)) < grace


# --- 4. the tracking URI: errors that tell the truth ---------------------------------


@pytest.mark.parametrize("source", URI_SOURCES)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://", "has no host"),
        ("not a uri", "has spaces"),
        ("http://h:notaport", "invalid port"),
        ("htp://h:5000", "unsupported scheme"),
        ("127.0.0.1:5000", "no scheme"),
    ],
)
def test_every_uri_error_names_where_the_value_came_from(
    monkeypatch: pytest.MonkeyPatch, source: str, value: str, message: str
) -> None:
    build = given(source, value)
    refused(
        lambda: build(monkeypatch), variable=source, names=(f"{source}={value!r}",), match=message
    )


# A blank tracking URI used to count as unset: a notebook with MLFLOW_TRACKING_URI=""
# tracked to a local sqlite store without a word (issue 16). Now the variable or
# argument is named, with the fix.
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
@pytest.mark.parametrize("source", ["MLFLOW_TRACKING_URI", "TRACKING_URI"])
def test_a_blank_variable_with_no_other_uri_is_refused(
    monkeypatch: pytest.MonkeyPatch, source: str, blank: str, tmp_path: Path
) -> None:
    refused(
        lambda: given(source, blank)(monkeypatch),
        variable=source,
        names=("is set but blank", f"sqlite:///{tmp_path}/mlflow.db"),
        fix=(f"unset {source} to track to the local store on purpose", EXAMPLE),
    )


@pytest.mark.parametrize("source", ["MLFLOW_TRACKING_URI", "TRACKING_URI"])
def test_a_blank_variable_in_a_remote_pod_is_refused_as_lost_with_the_pod(
    monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    error = refused(
        lambda: given(source, " ")(monkeypatch),
        variable=source,
        names=("is set but blank", "lost with the pod"),
        fix=(f"MLFLOW_TRACKING_URI={EXAMPLE}", f"unset {source}"),
    )
    assert "on purpose" not in (error.fix or "")  # a pod-local store is refused anyway


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_argument_is_refused(blank: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", EXAMPLE)  # it would have applied before
    refused(
        lambda: Settings(tracking_uri=blank),
        variable="tracking_uri",
        names=(f"tracking_uri={blank!r}", "blank"),
        fix=("pass None (or leave tracking_uri out)", EXAMPLE),
    )


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_mlflow_tracking_uri_lets_the_configmap_key_apply_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", blank)
    monkeypatch.setenv("TRACKING_URI", EXAMPLE)
    with pytest.warns(MichelangeloMlflowWarning, match="MLFLOW_TRACKING_URI is set but blank"):
        settings = Settings()
    assert settings.tracking_uri == EXAMPLE
    assert source_of(settings, "tracking_uri") == "TRACKING_URI"


@pytest.mark.parametrize(
    ("argument", "env"),
    [
        (EXAMPLE, {"MLFLOW_TRACKING_URI": " "}),  # the argument outranks the variables
        (None, {"MLFLOW_TRACKING_URI": EXAMPLE, "TRACKING_URI": ""}),  # outranked by the first
    ],
)
def test_a_blank_variable_that_is_outranked_changes_nothing_and_says_nothing(
    monkeypatch: pytest.MonkeyPatch, argument: str | None, env: dict[str, str]
) -> None:
    set_env(monkeypatch, env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Settings(tracking_uri=argument).tracking_uri == EXAMPLE


SUPPORTED = (
    *("http", "https", "databricks", "databricks://<profile>", "sqlite", "file"),
    *("postgresql", "mysql", "mssql", "a local path"),
)


@pytest.mark.parametrize("source", URI_SOURCES)
@pytest.mark.parametrize(
    ("value", "shown", "suggestion"),
    [
        ("htp://h:5000", "htp://h:5000", "http://h:5000"),
        ("hhttps://h", "hhttps://h", "https://h"),
        ("ftp://h", "ftp://h", "http://h"),
        ("htps://mlflow.example.com/", "htps://mlflow.example.com/", "https://mlflow.example.com/"),
        ("sqlit:///runs.db", "sqlit:///runs.db", "sqlite:///runs.db"),
        ("postgres://db/mlflow", "postgres://db/mlflow", "postgresql://db/mlflow"),
        (f"htp://bob:{SECRET}@h:5000", "htp://h:5000", "http://h:5000"),
        ("mailto:x", "mailto:x", None),
    ],
)
def test_a_misspelled_or_unsupported_scheme_is_refused_with_the_nearest_one(
    monkeypatch: pytest.MonkeyPatch, source: str, value: str, shown: str, suggestion: str | None
) -> None:
    build = given(source, value)
    fix = (*SUPPORTED, f"did you mean {suggestion}?") if suggestion else SUPPORTED
    refused(
        lambda: build(monkeypatch),
        variable=source,
        names=(repr(shown), "unsupported scheme"),
        fix=fix,
    )


@pytest.mark.parametrize("source", URI_SOURCES)
@pytest.mark.parametrize(
    "value", ["127.0.0.1:5000", "localhost:5000", "mlflow.example.com:5000", "[::1]:5000"]
)
def test_host_port_without_a_scheme_is_refused_with_http(
    monkeypatch: pytest.MonkeyPatch, source: str, value: str
) -> None:
    build = given(source, value)
    refused(
        lambda: build(monkeypatch),
        variable=source,
        names=(repr(value), "no scheme"),
        fix=(f"did you mean http://{value}?",),
    )


@pytest.mark.parametrize(
    ("value", "suggestion"), [("http//h:5000", "http://h:5000"), ("https:/h", "https://h")]
)
def test_a_scheme_without_its_slashes_is_refused(value: str, suggestion: str) -> None:
    refused(
        lambda: Settings(tracking_uri=value),
        variable="tracking_uri",
        fix=(f"did you mean {suggestion}?",),
    )


@pytest.mark.parametrize(
    "value",
    [
        EXAMPLE,
        "https://mlflow.example.com/prefix/",
        "http://[::1]:5000",
        "databricks",
        "databricks://ml-profile",
        "postgresql://db.example.com/mlflow",
        "postgresql+psycopg2://db.example.com/mlflow",
        "mysql+pymysql://db.example.com/mlflow",
        "mssql://db.example.com/mlflow",
        "sqlite:///runs.db",
        "sqlite:///:memory:",
    ],
)
def test_supported_uris_are_accepted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb.example.net")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-token")
    assert Settings(tracking_uri=value).tracking_uri == value


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return path


@pytest.mark.parametrize("source", URI_SOURCES)
@pytest.mark.parametrize(
    "template",
    ["sqlite:///{file}/runs.db", "sqlite:///{file}/deeper/runs.db", "sqlite:///{dir}"],
)
def test_an_unwritable_sqlite_store_is_refused(
    monkeypatch: pytest.MonkeyPatch, source: str, template: str, a_file: Path, tmp_path: Path
) -> None:
    value = template.format(file=a_file, dir=tmp_path)
    build = given(source, value)
    refused(
        lambda: build(monkeypatch),
        variable=source,
        names=(repr(value), "cannot be used"),
        fix=(f"sqlite:///{tmp_path}/mlflow.db",),
    )


@pytest.mark.parametrize("template", ["file://{file}/mlruns", "{file}/mlruns", "{file}"])
def test_an_unwritable_file_store_is_refused_where_mlflow_allows_it(
    monkeypatch: pytest.MonkeyPatch, template: str, a_file: Path
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    value = template.format(file=a_file)
    refused(
        lambda: Settings(tracking_uri=value),
        variable="tracking_uri",
        names=(repr(value), f"{a_file} is a file, not a directory"),
        fix=("remove what is in the way",),
    )


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
@pytest.mark.parametrize("template", ["sqlite:///{dir}/runs.db", "sqlite:///{dir}/new/runs.db"])
def test_a_store_in_a_read_only_directory_is_refused(tmp_path: Path, template: str) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    value = template.format(dir=read_only)
    refused(
        lambda: Settings(tracking_uri=value),
        variable="tracking_uri",
        names=("no permission",),
        fix=("fix the permissions",),
    )


@pytest.mark.parametrize(
    ("template", "denied"),
    [
        ("sqlite:///{dir}/runs.db", "{dir}"),
        ("sqlite:///{dir}/new/deeper/runs.db", "{dir}"),
        ("sqlite:///{dir}/existing.db", "{dir}/existing.db"),
    ],
)
def test_a_store_without_write_permission_is_refused_even_for_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, template: str, denied: str
) -> None:
    (tmp_path / "existing.db").write_text("")
    real_access = os.access
    refused_path = Path(denied.format(dir=tmp_path))

    def access(path: Any, mode: int) -> bool:
        return Path(path) != refused_path and real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    refused(
        lambda: Settings(tracking_uri=template.format(dir=tmp_path)),
        variable="tracking_uri",
        names=(f"{refused_path} cannot be written (no permission)",),
        fix=("fix the permissions",),
    )


def test_the_installed_mlflow_refuses_the_file_store(tmp_path: Path) -> None:
    with pytest.raises(mlflow.exceptions.MlflowException, match="maintenance mode"):
        MlflowClient((tmp_path / "mlruns").as_uri()).search_experiments()
    assert _stores._mlflow_version() == Version(mlflow.__version__)


@pytest.mark.parametrize("source", URI_SOURCES)
@pytest.mark.parametrize(
    ("template", "store"),
    [
        ("file://{dir}/mlruns", "{dir}/mlruns"),
        ("file:./mlruns", "{dir}/mlruns"),
        ("{dir}/runs", "{dir}/runs"),
        ("mlruns", "{dir}/mlruns"),
    ],
)
def test_a_file_store_is_refused_with_sqlite_as_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str, template: str, store: str
) -> None:
    value = template.format(dir=tmp_path)
    build = given(source, value)
    refused(
        lambda: build(monkeypatch),
        variable=source,
        names=(repr(value), "file store", mlflow.__version__),
        fix=(f"use sqlite:///{store.format(dir=tmp_path)}/mlflow.db", "MLFLOW_ALLOW_FILE_STORE"),
    )


def test_a_file_store_is_accepted_when_mlflow_accepts_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    value = (tmp_path / "mlruns").as_uri()
    assert Settings(tracking_uri=value, allow_file_store=True).tracking_uri == value
    monkeypatch.setattr(_stores, "_mlflow_version", lambda: Version("3.12.0"))
    assert Settings(tracking_uri=value).tracking_uri == value


@pytest.mark.parametrize("source", URI_SOURCES)
@pytest.mark.parametrize(
    "template", ["sqlite:///runs.db", "sqlite:///{dir}/runs.db", "file://{dir}/mlruns", "mlruns"]
)
def test_a_pod_local_store_in_a_remote_pod_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str, template: str
) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    value = template.format(dir=tmp_path)
    build = given(source, value)
    refused(
        lambda: build(monkeypatch),
        variable=source,
        names=(repr(value), "lost with the pod"),
        fix=("--env MLFLOW_TRACKING_URI=", "MICHELANGELO_MLFLOW_ALLOW_LOCAL_STORE=true"),
    )


@pytest.mark.parametrize("value", ["sqlite:////mnt/volume/runs.db", "sqlite:///runs.db"])
def test_a_pod_local_store_is_accepted_with_the_opt_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    monkeypatch.setenv(f"{PREFIX}ALLOW_LOCAL_STORE", "true")
    value = value.replace("/mnt/volume", str(tmp_path))
    assert Settings(tracking_uri=value).tracking_uri == value


@pytest.mark.parametrize("value", [EXAMPLE, "postgresql://db.example.com/mlflow"])
def test_a_network_store_is_accepted_in_a_remote_pod(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    assert Settings(tracking_uri=value).remote_run


def test_remote_pod_without_uri_leads_with_the_platform_guides_two_ways(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    error = refused(Settings, variable="MLFLOW_TRACKING_URI", names=("lost with the pod",))
    assert error.fix is not None
    assert error.fix.startswith("set it in the workflow code")
    in_code = error.fix.index(f'mlflow.set_tracking_uri("{EXAMPLE}")')
    as_settings = error.fix.index(f'mm.Settings(tracking_uri="{EXAMPLE}")')
    at_submission = error.fix.index(
        f"ma pipeline dev-run -f pipeline.yaml --env MLFLOW_TRACKING_URI={EXAMPLE}"
    )
    configmap = error.fix.index("TRACKING_URI, a key of the michelangelo-config ConfigMap")
    assert in_code < as_settings < at_submission < configmap
    assert "is read as well if an operator set it" in error.fix
    assert "ask the operator" not in error.fix


def test_remote_pod_with_configmap_uri_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    monkeypatch.setenv("TRACKING_URI", EXAMPLE)
    assert Settings().remote_run
    assert Settings().tracking_uri == EXAMPLE


# --- 4. credentials in the URI -------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "clean", "user", "password"),
    [
        ("https://bob:s3cr%40t@m.example.com/path", "https://m.example.com/path", "bob", "s3cr@t"),
        (f"http://alice:{SECRET}@127.0.0.1:5000", "http://127.0.0.1:5000", "alice", SECRET),
        (f"https://al%20ice:{SECRET}@h.example.com", "https://h.example.com", "al ice", SECRET),
        ("https://token-only@h.example.com", "https://h.example.com", "token-only", ""),
    ],
)  # fmt: skip
def test_credentials_in_the_uri_are_moved_out_everywhere(
    uri: str, clean: str, user: str, password: str
) -> None:
    settings = Settings(tracking_uri=uri)
    assert settings.tracking_uri == clean
    assert settings.effective_tracking_uri == clean
    assert settings.safe_tracking_uri == clean
    assert settings.credential_method == "basic"
    assert settings.username == SecretStr(user)
    assert settings.password == SecretStr(password)
    assert settings.tracking_username == SecretStr(user)
    assert settings.tracking_password == SecretStr(password)
    assert settings.model_dump()["tracking_uri"] == clean
    assert json.loads(settings.model_dump_json())["tracking_uri"] == clean
    assert source_of(settings, "tracking_password") == "argument"
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    shown += repr(settings.describe()) + repr(settings.model_dump())
    assert "@" not in shown
    if password:
        assert password not in shown


def test_credentials_from_the_uri_variable_are_described_as_that_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKING_URI", f"https://bob:{SECRET}@mlflow.example.com")
    settings = Settings()
    assert source_of(settings, "tracking_password") == "TRACKING_URI"
    assert settings.secret_values() == ("bob", SECRET)


IN_URI = f"https://u:{SECRET}@h.example.com"


@pytest.mark.parametrize(
    ("env", "arguments", "variable"),
    [
        ({"MLFLOW_TRACKING_USERNAME": "u"}, {"tracking_uri": IN_URI}, "tracking_uri"),
        ({"MLFLOW_TRACKING_PASSWORD": SECRET}, {"tracking_uri": "https://u:p@h"}, "tracking_uri"),
        ({"MLFLOW_TRACKING_URI": IN_URI}, {"tracking_password": "x"}, "MLFLOW_TRACKING_URI"),
        ({"TRACKING_URI": IN_URI, "MLFLOW_TRACKING_USERNAME": "u"}, {}, "TRACKING_URI"),
    ],
)  # fmt: skip
def test_credentials_given_twice_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], arguments: dict[str, str], variable: str
) -> None:
    set_env(monkeypatch, env)
    refused(
        lambda: make(**arguments),
        variable=variable,
        names=("credentials are given twice",),
        fix=("remove user:password@",),
    )


def test_a_database_uri_keeps_its_credentials_apart() -> None:
    settings = Settings(tracking_uri=f"postgresql://mlflow:{SECRET}@db.example.com/mlflow")
    assert settings.tracking_uri == "postgresql://db.example.com/mlflow"
    assert settings.effective_tracking_uri == f"postgresql://mlflow:{SECRET}@db.example.com/mlflow"
    assert settings.credential_method == "none"
    assert SECRET in settings.secret_values()
    shown = repr(settings) + settings.model_dump_json() + repr(settings.describe())
    assert SECRET not in shown
    assert settings.refreshed().effective_tracking_uri == settings.effective_tracking_uri


def test_repr_and_describe_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice-canary")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-canary")
    settings = Settings(tracking_uri="https://mlflow.example.com")
    assert isinstance(settings.password, SecretStr)
    shown = repr(settings) + str(settings) + repr(settings.describe())
    assert "canary" not in shown
    assert settings.password.get_secret_value() == "hunter2-canary"


# --- 4. MA_API_SERVER ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "ma-apiserver",
        "ma-apiserver.michelangelo:15566",
        "10.0.0.1:15566",
        "grpc://10.0.0.1:15566",
        "dns:///ma-apiserver.michelangelo:15566",
        "[::1]:15566",
        "localhost:1",
        "h:65535",
        "",
    ],
)
def test_a_host_port_api_server_is_accepted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MA_API_SERVER", value)
    assert Settings().api_server == value


@pytest.mark.parametrize(
    "value",
    [
        "host:notaport",
        "host:0",
        "host:70000",
        "host:",
        "ma apiserver:15566",
        "ma-apiserver/api:15566",
        "http://ma-apiserver:15566",
        "grpc://",
    ],
)
@pytest.mark.parametrize("as_argument", [False, True])
def test_an_api_server_that_is_not_host_port_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, as_argument: bool
) -> None:
    if not as_argument:
        monkeypatch.setenv("MA_API_SERVER", value)
    arguments = {"api_server": value} if as_argument else {}
    refused(
        lambda: make(**arguments),
        variable="MA_API_SERVER",
        names=(repr(value), "is not host:port"),
        fix=("ma-apiserver.michelangelo:15566",),
    )


# --- 5. refreshed() ------------------------------------------------------------------


def test_refreshed_keeps_the_arguments_and_reads_the_environment_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    early = Settings(tracking_uri=EXAMPLE.replace("http:", "https:"), namespace="ml-team")
    assert early.credential_method == "none"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "injected-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://not-this-one.example.com")
    monkeypatch.setenv("MA_NAMESPACE", "not-this-one")
    monkeypatch.setenv(f"{PREFIX}SPOOL_GRACE", "12")
    late = early.refreshed()
    assert late is not early
    assert late.tracking_uri == "https://mlflow.example.com:5000"
    assert late.namespace == "ml-team"
    assert late.username == SecretStr("injected-user")
    assert late.password == SecretStr(SECRET)
    assert late.spool_grace == 12.0
    assert source_of(late, "tracking_uri") == "argument"
    assert source_of(late, "tracking_password") == "MLFLOW_TRACKING_PASSWORD"
    assert early.username is None  # the original is unchanged


def test_refreshed_keeps_credentials_given_in_the_uri_without_warning_again() -> None:
    with pytest.warns(DeprecationWarning, match="use preflight_enabled"):
        early = Settings(tracking_uri=f"https://bob:{SECRET}@h.example.com", preflight=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        late = early.refreshed()
    assert (late.tracking_uri, late.password, late.preflight_enabled) == (
        "https://h.example.com",
        SecretStr(SECRET),
        False,
    )


def test_refreshed_validates_the_new_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    early = Settings(tracking_uri=EXAMPLE)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "half-of-a-pair")
    refused(early.refreshed, variable="MLFLOW_TRACKING_PASSWORD")


# --- settings are data ---------------------------------------------------------------


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.preflight_enabled = False


def test_settings_do_not_touch_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = dict(os.environ)
    Settings(tracking_uri="http://u:p@127.0.0.1:5000").refreshed()
    assert dict(os.environ) == before


# --- the configuration reference matches the fields ----------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def documented_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].strip("`") in Settings.model_fields:
            rows[cells[1].strip("`")] = cells
    return rows


def test_the_variables_table_has_one_row_per_field_with_its_variables_and_description() -> None:
    rows = documented_rows()
    assert list(rows) == list(Settings.model_fields)  # every field, in declaration order
    for name, (variables, _, default, meaning) in rows.items():
        assert variables == " > ".join(f"`{v}`" for v in variables_of(name))
        assert meaning == Settings.model_fields[name].description
        if name in DEFAULTS:
            shown = DEFAULTS[name]
            expected = (
                "unset" if shown is None else f"`{'1GiB' if name.endswith('bytes') else shown}`"
            )
            assert default == expected, name


@pytest.mark.parametrize(
    ("grace", "retries", "factor", "timeout"),
    [(1, 2, 1, 10), (30, 5, 1, 30), (60, 6, 1, 60), (300, 9, 1, 120)],
)
def test_the_documented_budget_table_is_what_http_budget_returns(
    grace: float, retries: int, factor: int, timeout: int
) -> None:
    row = f"| {grace}{' (default)' if grace == 30 else ''} | {retries} | {factor} | {timeout} |"
    assert row in DOCS.read_text()
    assert Settings(spool_grace=grace).http_budget() == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(factor),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout),
    }
