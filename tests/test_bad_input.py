"""A corpus of bad inputs: each gets a typed error that names it and its fix, and no secret.

Every case runs with a canary credential in the environment; whatever the error says,
the canary must not be in it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import michelangelo_mlflow as mm
from michelangelo_mlflow._cli import main
from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowError
from tests._faults import closed_port

CANARY_USER = "canary-user"
CANARY = "canary-Zp4Qx8Lm2Vw7"
LOCAL = f"http://127.0.0.1:{closed_port()}"


@dataclass(frozen=True)
class Case:
    """One bad input: what to call, the error expected, and what it must name."""

    call: Callable[[], Any]
    variable: str
    says: str
    kind: type[MichelangeloMlflowError] = ConfigurationError
    env: tuple[tuple[str, str], ...] = ()


def run(**kwargs: Any) -> Callable[[], None]:
    def call() -> None:
        with mm.tracking_run(**kwargs):
            pass  # pragma: no cover - every case fails before the body

    return call


def settings(**kwargs: Any) -> Callable[[], None]:
    return lambda: mm.Settings(**kwargs)


def register(**kwargs: Any) -> Callable[[], None]:
    arguments = {"model": "runs:/0123456789abcdef0123456789abcdef/model", "name": "fraud"}
    arguments.update(kwargs)

    def call() -> None:
        mm.register_model(
            **arguments,
            settings=mm.Settings(tracking_uri=LOCAL, registry_backend="manifest", namespace="ml"),
        )

    return call


def cyclic() -> dict[str, Any]:
    values: dict[str, Any] = {"lr": 0.1}
    values["self"] = values
    return values


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def decorate_class() -> None:
    @mm.tracked
    class Trainer:
        pass


def decorate_generator() -> None:
    def batches() -> Iterator[int]:
        yield 1

    mm.tracked(batches)


NO_BASIC = (("MLFLOW_TRACKING_USERNAME", ""), ("MLFLOW_TRACKING_PASSWORD", ""))

CASES: dict[str, Case] = {
    # --- tracking URIs, from every source -------------------------------------------
    "scheme htp": Case(settings(tracking_uri="htp://mlflow:5000"), "tracking_uri", "http://"),
    "scheme hhttps": Case(settings(tracking_uri="hhttps://mlflow"), "tracking_uri", "https://"),
    "scheme ftp": Case(settings(tracking_uri="ftp://mlflow"), "tracking_uri", "supported"),
    "scheme mailto": Case(settings(tracking_uri="mailto:ops@example.com"), "tracking_uri", "supported"),
    "no scheme ip": Case(settings(tracking_uri="127.0.0.1:5000"), "tracking_uri", "http://127.0.0.1:5000"),
    "no scheme host": Case(settings(tracking_uri="localhost:5000"), "tracking_uri", "http://localhost:5000"),
    "spaces": Case(settings(tracking_uri="http://mlflow :5000"), "tracking_uri", "spaces"),
    "no host": Case(settings(tracking_uri="http://"), "tracking_uri", "host"),
    "bad port": Case(settings(tracking_uri="http://mlflow:notaport"), "tracking_uri", "port"),
    "env htp": Case(settings(), "MLFLOW_TRACKING_URI", "http://",
                    env=(("MLFLOW_TRACKING_URI", "htp://mlflow:5000"),)),
    "configmap htp": Case(settings(), "TRACKING_URI", "http://",
                          env=(("TRACKING_URI", "htp://mlflow:5000"),)),
    "env blank": Case(settings(), "MLFLOW_TRACKING_URI", "set but blank", env=(("MLFLOW_TRACKING_URI", "  "),)),
    "configmap blank": Case(settings(), "TRACKING_URI", "set but blank", env=(("TRACKING_URI", ""),)),
    "argument blank": Case(settings(tracking_uri=""), "tracking_uri", "blank"),
    "argument spaces": Case(settings(tracking_uri="   "), "tracking_uri", "blank"),
    "env blank in pod": Case(settings(), "MLFLOW_TRACKING_URI", "lost with the pod",
                             env=(("MLFLOW_TRACKING_URI", "   "), ("UF_REMOTE_RUN", "1"))),
    "pod-local sqlite": Case(settings(), "MLFLOW_TRACKING_URI", "MICHELANGELO_MLFLOW_ALLOW_LOCAL_STORE",
                             env=(("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"), ("UF_REMOTE_RUN", "1"))),
    "pod-local path": Case(settings(), "MLFLOW_TRACKING_URI", "lost with the pod",
                           env=(("MLFLOW_TRACKING_URI", "./mlruns"), ("UF_REMOTE_RUN", "1"))),
    "file in the way": Case(settings(tracking_uri="sqlite:///a-file/mlflow.db"), "tracking_uri", "a-file"),
    # --- other settings --------------------------------------------------------------
    "api server port": Case(settings(), "MA_API_SERVER", "host:port",
                            env=(("MA_API_SERVER", "ma-apiserver:notaport"),)),
    "api server slash": Case(settings(), "MA_API_SERVER", "host:port",
                             env=(("MA_API_SERVER", "http://ma-apiserver/x"),)),
    "negative timeout": Case(settings(), "MICHELANGELO_MLFLOW_PREFLIGHT_TIMEOUT", "PREFLIGHT_TIMEOUT",
                             env=(("MICHELANGELO_MLFLOW_PREFLIGHT_TIMEOUT", "-1"),)),
    "version policy": Case(settings(), "MICHELANGELO_MLFLOW_VERSION_POLICY", "strict",
                           env=(("MICHELANGELO_MLFLOW_VERSION_POLICY", "sometimes"),)),
    "spool mode": Case(settings(), "MICHELANGELO_MLFLOW_SPOOL", "off",
                       env=(("MICHELANGELO_MLFLOW_SPOOL", "maybe"),)),
    "spool cap": Case(settings(), "MICHELANGELO_MLFLOW_SPOOL_MAX_BYTES", "MiB",
                      env=(("MICHELANGELO_MLFLOW_SPOOL_MAX_BYTES", "10"),)),
    "flush interval": Case(settings(), "MICHELANGELO_MLFLOW_FLUSH_INTERVAL", "FLUSH_INTERVAL",
                           env=(("MICHELANGELO_MLFLOW_FLUSH_INTERVAL", "0"),)),
    "grace": Case(settings(), "MICHELANGELO_MLFLOW_SPOOL_GRACE", "SPOOL_GRACE",
                  env=(("MICHELANGELO_MLFLOW_SPOOL_GRACE", "-5"),)),
    "typo variable": Case(settings(), "MICHELANGELO_MLFLOW_SPOL", "MICHELANGELO_MLFLOW_SPOOL",
                          env=(("MICHELANGELO_MLFLOW_SPOL", "off"),)),
    "user without password": Case(settings(tracking_uri=LOCAL), "MLFLOW_TRACKING_PASSWORD", "both",
                                  env=(("MLFLOW_TRACKING_PASSWORD", ""),)),
    "two credential methods": Case(settings(tracking_uri=LOCAL), "MLFLOW_TRACKING_TOKEN", "one method",
                                   env=(("MLFLOW_TRACKING_TOKEN", CANARY),)),
    # the Databricks cases unset the corpus' basic-auth pair: next to Databricks it is refused
    "databricks no token": Case(settings(tracking_uri="databricks"), "DATABRICKS_TOKEN", "DATABRICKS_TOKEN",
                                env=(("DATABRICKS_HOST", "https://adb-1.azuredatabricks.net"), *NO_BASIC)),
    "databricks http host": Case(settings(tracking_uri="databricks"), "DATABRICKS_HOST", "https://",
                                 env=(("DATABRICKS_HOST", "http://adb-1"), ("DATABRICKS_TOKEN", CANARY), *NO_BASIC)),
    "databricks and basic": Case(settings(tracking_uri="databricks"), "MLFLOW_TRACKING_USERNAME", "two credential methods",
                                 env=(("DATABRICKS_HOST", "https://adb-1.azuredatabricks.net"), ("DATABRICKS_TOKEN", CANARY))),
    "databricks and token": Case(settings(tracking_uri="databricks"), "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_TOKEN",
                                 env=(("DATABRICKS_HOST", "https://adb-1.azuredatabricks.net"), ("DATABRICKS_TOKEN", CANARY),
                                      ("MLFLOW_TRACKING_TOKEN", CANARY), *NO_BASIC)),
    "unknown keyword": Case(settings(tracking_url=LOCAL), "tracking_url", "tracking_uri"),
    "settings wrong type": Case(settings(preflight_attempts="many"), "preflight_attempts", "preflight_attempts"),
    # --- tracking_run arguments ------------------------------------------------------
    "settings dict": Case(run(settings={"tracking_uri": LOCAL}), "settings", "Settings("),
    "params list": Case(run(params=["lr", 0.1]), "params", "mapping"),
    "params string": Case(run(params="lr=0.1"), "params", "mapping"),
    "tags string": Case(run(tags="team=risk"), "tags", "mapping"),
    "experiment int": Case(run(experiment=42), "experiment", "string"),
    "experiment empty": Case(run(experiment=""), "experiment", "non-blank"),
    "experiment blank": Case(run(experiment="   "), "experiment", "non-blank"),
    "run name int": Case(run(run_name=7), "run_name", "string"),
    "run name blank": Case(run(run_name=" "), "run_name", "non-blank"),
    "nested string": Case(run(nested="yes"), "nested", "True or False"),
    "run id int": Case(run(run_id=123), "run_id", "string"),
    "description int": Case(run(description=5), "description", "string"),
    "key int": Case(run(key=5), "key", "string"),
    "unknown option": Case(run(autolgo=True), "autolgo", "one of"),
    # --- params and tags content ---------------------------------------------------
    "params cycle": Case(run(params=cyclic()), "self", "cycle"),
    "params int key": Case(run(params={1: 0.1}), "1", "string key"),
    "params nested int key": Case(run(params={"model": {2: "x"}}), "model.2", "string key"),
    "params unprintable": Case(run(params={"thing": Unprintable()}), "thing", "str()"),
    "params key too long": Case(run(params={"k" * 251: 1}), "k" * 60, "shorter"),
    "params empty key": Case(run(params={"": 1}), "", "param key"),
    "tags cycle": Case(run(tags=cyclic()), "self", "cycle"),
    "tags int key": Case(run(tags={3: "x"}), "3", "string key"),
    "params clash": Case(run(params={"a.b": 1, "a": {"b": 2}}), "a.b", "rename"),
    # --- the decorator -------------------------------------------------------------
    "tracked class": Case(decorate_class, "fn", "method"),
    "tracked generator": Case(decorate_generator, "fn", "tracking_run"),
    "tracked log_params": Case(lambda: mm.tracked(log_params="cfg")(lambda x: x), "log_params",
                               "parameter names"),
    "tracked experiment int": Case(lambda: mm.tracked(experiment=3), "experiment", "string"),
    "tracked tags string": Case(lambda: mm.tracked(tags="team=risk"), "tags", "mapping"),
    # --- preflight -------------------------------------------------------------------
    "preflight string": Case(lambda: mm.preflight(LOCAL), "settings", "mm.Settings"),
    "preflight dict": Case(lambda: mm.preflight({"tracking_uri": LOCAL}), "settings", "mm.Settings"),
    # --- register_model -----------------------------------------------------------------
    "deployable s3 empty": Case(register(deployable_artifact_uri="s3://"), "deployable_artifact_uri",
                                "bucket"),
    "deployable not uri": Case(register(deployable_artifact_uri="::not a uri::"),
                               "deployable_artifact_uri", "s3://"),
    "deployable blank": Case(register(deployable_artifact_uri=" "), "deployable_artifact_uri", "s3://"),
    "model name empty": Case(register(name=""), "name", "fraud-detector"),
    "model name blank": Case(register(name="   "), "name", "fraud-detector"),
    "model kind": Case(register(kind="binary"), "kind", "did you mean 'binary_classification'"),
    "package type": Case(register(package_type="trition"), "package_type", "did you mean 'triton'"),
    "label value": Case(register(labels={"team": "risk & fraud"}), "labels", "label"),
    "michelangelo name": Case(register(michelangelo_name="Fraud Detector"), "michelangelo_name",
                              "fraud-detector"),
    "namespace": Case(register(namespace="Not_A_Namespace"), "MA_NAMESPACE", "namespace"),
    "model object": Case(register(model=42), "model", "ModelInfo"),
    "runs uri": Case(register(model="runs:/only-a-run-id"), "model", "runs:/<run_id>"),
}  # fmt: skip


@pytest.fixture(autouse=True)
def canary_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", CANARY_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", CANARY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", LOCAL)
    (tmp_path / "a-file").write_text("in the way")


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_gets_a_typed_error_naming_it_and_its_fix(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    for variable, value in case.env:
        if variable.startswith(("MLFLOW_TRACKING_URI", "TRACKING_URI")) or value:
            monkeypatch.setenv(variable, value)
        else:
            monkeypatch.delenv(variable, raising=False)
    if any(v == "TRACKING_URI" for v, _ in case.env):
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(case.kind) as info:
        case.call()
    error = info.value
    text = str(error)
    if isinstance(error, ConfigurationError):
        assert error.variable == case.variable or case.variable in (error.variable or "")
    assert error.fix, f"{name}: no fix in {text!r}"
    assert case.says in text, f"{name}: {case.says!r} not in {text!r}"
    assert CANARY not in text
    assert CANARY not in repr(error)


CLI_CASES = {
    "doctor htp": (["doctor", "--tracking-uri", "htp://mlflow:5000"], 2, "http://"),
    "doctor databricks profile": (["doctor", "--tracking-uri", "databricks://nosuch"], 2, "nosuch"),
    "config ftp": (["config", "--tracking-uri", "ftp://mlflow"], 2, "supported"),
    "netpol namespace": (["netpol", "--namespace", "Bad_NS", "--cidr", "10.0.0.1",
                          "--selector", "app=x"], 2, "--namespace"),
    "netpol name": (["netpol", "--namespace", "ml", "--cidr", "10.0.0.1", "--selector", "app=x",
                     "--name", "Bad Name!"], 2, "--name"),
    "netpol no selector": (["netpol", "--namespace", "ml", "--cidr", "10.0.0.1"], 2, "--selector"),
    "sync a file": (["sync", "--spool", "a-file"], 2, "--spool"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_a_bad_cli_input_is_one_line_and_exit_2(name: str) -> None:
    args, code, says = CLI_CASES[name]
    result = CliRunner().invoke(main, args, env={"HOME": os.getcwd()})
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert says in errors[0]
    assert " -- fix: " in errors[0]
    assert "Traceback" not in result.output
    assert CANARY not in result.output
