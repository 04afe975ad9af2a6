"""tracking_run and @tracked against a real MLflow server."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow._params import REDACTED, TRUNCATED
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowWarning,
    TrackingError,
)
from michelangelo_mlflow.testing import TrackingServer
from tests.helpers import read_as_admin


def read(client: MlflowClient, run_id: str) -> Run:
    return client.get_run(run_id)


# --- status -------------------------------------------------------------------------


def test_normal_exit_is_finished(settings: mm.Settings, client: MlflowClient) -> None:
    with mm.tracking_run("status", "ok", settings=settings) as run:
        mlflow.log_metric("rows", 1_000)
    stored = read(client, run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"rows": 1_000}
    assert stored.info.run_name == "ok"
    assert mlflow.active_run() is None


def test_exception_marks_failed_and_propagates_unchanged(
    settings: mm.Settings, client: MlflowClient
) -> None:
    error = ValueError("bad batch 7")
    with pytest.raises(ValueError, match="bad batch 7") as info:
        with mm.tracking_run("status", settings=settings) as run:
            raise error
    assert info.value is error
    stored = read(client, run.info.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["michelangelo.error.type"] == "ValueError"
    assert stored.data.tags["michelangelo.error.message"] == "bad batch 7"


def test_keyboard_interrupt_marks_killed(settings: mm.Settings, client: MlflowClient) -> None:
    with pytest.raises(KeyboardInterrupt):
        with mm.tracking_run("status", settings=settings) as run:
            raise KeyboardInterrupt
    assert read(client, run.info.run_id).info.status == "KILLED"


@pytest.mark.parametrize(("code", "status"), [(0, "FINISHED"), (3, "FAILED")])
def test_system_exit_status_follows_the_exit_code(
    settings: mm.Settings, client: MlflowClient, code: int, status: str
) -> None:
    with pytest.raises(SystemExit):
        with mm.tracking_run("status", settings=settings) as run:
            raise SystemExit(code)
    assert read(client, run.info.run_id).info.status == status


def test_mlflow_error_in_the_body_is_translated_and_chained(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.raises(TrackingError) as info:
        with mm.tracking_run("status", settings=settings) as run:
            mlflow.log_param("lr", 0.1)
            mlflow.log_param("lr", 0.2)  # params are immutable: INVALID_PARAMETER_VALUE
    assert isinstance(info.value.__cause__, MlflowException)
    assert info.value.run_id == run.info.run_id
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert read(client, run.info.run_id).info.status == "FAILED"


def test_runs_left_open_inside_are_ended_too(settings: mm.Settings, client: MlflowClient) -> None:
    with pytest.raises(RuntimeError):
        with mm.tracking_run("status", settings=settings) as run:
            child = mlflow.start_run(nested=True)
            raise RuntimeError("child left open")
    assert read(client, child.info.run_id).info.status == "FAILED"
    assert read(client, run.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_body_that_ends_its_run_still_gets_the_right_status(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.raises(RuntimeError):
        with mm.tracking_run("status", settings=settings) as run:
            mlflow.end_run()  # FINISHED, then the task fails
            raise RuntimeError("after end_run")
    assert read(client, run.info.run_id).info.status == "FAILED"


def test_a_tracking_run_is_entered_once(settings: mm.Settings) -> None:
    run = mm.tracking_run("status", settings=settings)
    with run:
        pass
    with pytest.raises(RuntimeError, match="entered once"):
        run.__enter__()


def test_an_active_run_needs_nested(settings: mm.Settings) -> None:
    with mm.tracking_run("status", settings=settings) as outer:
        with pytest.raises(ConfigurationError, match=outer.info.run_id) as info:
            with mm.tracking_run("status", settings=settings):
                pass
        assert "nested=True" in str(info.value)


# --- nesting and resuming -----------------------------------------------------------


def test_plain_nested_start_run_lands_in_the_tracked_experiment(
    settings: mm.Settings, client: MlflowClient
) -> None:
    mlflow.set_experiment("somewhere-else")  # on another server: must not leak in
    with mm.tracking_run("nesting", settings=settings) as parent:
        with mlflow.start_run(nested=True) as child:
            pass
    assert child.info.experiment_id == parent.info.experiment_id
    child_tags = client.get_run(child.info.run_id).data.tags
    assert child_tags["mlflow.parentRunId"] == parent.info.run_id


def test_resume_ignores_an_active_experiment_set_elsewhere(settings: mm.Settings) -> None:
    with mm.tracking_run("resume", settings=settings) as first:
        pass
    mlflow.set_experiment("unrelated")
    with mm.tracking_run(run_id=first.info.run_id, settings=settings) as again:
        pass
    assert again.info.run_id == first.info.run_id


def test_nested_runs(settings: mm.Settings, client: MlflowClient) -> None:
    with mm.tracking_run("nesting", "parent", settings=settings) as parent:
        with mm.tracking_run("nesting", "child", nested=True) as child:
            mlflow.log_metric("loss", 0.5)
        assert mlflow.active_run().info.run_id == parent.info.run_id  # type: ignore[union-attr]
    stored_child = read(client, child.info.run_id)
    assert stored_child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert stored_child.data.metrics == {"loss": 0.5}
    assert read(client, parent.info.run_id).info.status == "FINISHED"


def test_resume_by_run_id(settings: mm.Settings, client: MlflowClient) -> None:
    with mm.tracking_run("resume", params={"lr": 0.1}, settings=settings) as first:
        mlflow.log_metric("loss", 1.0, step=0)
    with mm.tracking_run(run_id=first.info.run_id, params={"lr": 0.1}, settings=settings) as again:
        mlflow.log_metric("loss", 0.5, step=1)
    assert again.info.run_id == first.info.run_id
    history = client.get_metric_history(first.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    assert read(client, first.info.run_id).info.status == "FINISHED"


def test_resume_with_a_changed_param_is_refused(settings: mm.Settings) -> None:
    with mm.tracking_run("resume", params={"lr": 0.1}, settings=settings) as first:
        pass
    with pytest.raises(ConfigurationError, match="lr"):
        with mm.tracking_run(run_id=first.info.run_id, params={"lr": 0.2}, settings=settings):
            pass


@pytest.mark.parametrize("run_id", ["0123456789abcdef0123456789abcdef", "not-a-run-id"])
def test_resuming_a_missing_run_says_so(settings: mm.Settings, run_id: str) -> None:
    with pytest.raises(ConfigurationError, match="no such run") as info:
        with mm.tracking_run(run_id=run_id, settings=settings):
            pass
    assert info.value.variable == "run_id"
    assert "created on" in str(info.value)


def test_resuming_a_deleted_run_says_so(settings: mm.Settings, client: MlflowClient) -> None:
    with mm.tracking_run("resume", settings=settings) as run:
        pass
    client.delete_run(run.info.run_id)
    with pytest.raises(ConfigurationError, match="it is deleted"):
        with mm.tracking_run(run_id=run.info.run_id, settings=settings):
            pass


def test_a_missing_experiment_id_says_what_to_set(
    tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "987654")
    with pytest.raises(ConfigurationError, match="names no experiment") as info:
        with mm.tracking_run():
            pass
    assert info.value.variable == "MLFLOW_EXPERIMENT_ID"
    assert "MLFLOW_EXPERIMENT_NAME" in str(info.value)


def test_inherited_mlflow_run_id_is_not_resumed(
    tracking_server: TrackingServer, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mm.tracking_run("inherit", settings=mm.Settings(tracking_uri=tracking_server.url)) as old:
        pass
    monkeypatch.setenv("MLFLOW_RUN_ID", old.info.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    with mm.tracking_run("inherit") as new:
        assert "MLFLOW_RUN_ID" not in os.environ
    assert new.info.run_id != old.info.run_id
    assert os.environ["MLFLOW_RUN_ID"] == old.info.run_id  # restored for whoever set it


# --- MLflow globals -----------------------------------------------------------------


def test_globals_are_restored(settings: mm.Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    before_uri = mlflow.get_tracking_uri()
    with mm.tracking_run("globals", settings=settings):
        assert mlflow.get_tracking_uri() == settings.tracking_uri
        # The spool is on: a synchronous call gives up after about the 30 s grace.
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
        assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    assert mlflow.get_tracking_uri() == before_uri
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_user_set_tracking_uri_is_restored(settings: mm.Settings, tmp_path: object) -> None:
    mlflow.set_tracking_uri("sqlite:///elsewhere.db")
    with mm.tracking_run("globals", settings=settings):
        pass
    assert mlflow.get_tracking_uri() == "sqlite:///elsewhere.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"


def test_sequential_runs_land_on_their_own_servers(
    tracking_server: TrackingServer, auth_server: TrackingServer
) -> None:
    first = mm.Settings(tracking_uri=tracking_server.url)
    second = mm.Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=auth_server.admin_password,
    )
    with mm.tracking_run("two-servers", settings=first) as a:
        mlflow.log_metric("server", 1)
    with mm.tracking_run("two-servers", settings=second) as b:
        mlflow.log_metric("server", 2)
    assert MlflowClient(tracking_server.url).get_run(a.info.run_id).data.metrics == {"server": 1}
    stored = read_as_admin(auth_server, b.info.run_id)
    assert stored.data.metrics == {"server": 2}
    with pytest.raises(MlflowException) as info:
        MlflowClient(tracking_server.url).get_run(b.info.run_id)
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"


# --- basic auth ---------------------------------------------------------------------


def test_basic_auth_server_with_right_credentials_from_the_environment(
    auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth_server.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_server.admin_password)
    with mm.tracking_run("auth", params={"lr": 0.1}) as run:
        mlflow.log_metric("auc", 0.9)
    stored = read_as_admin(auth_server, run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {"lr": "0.1"}


def test_credentials_given_as_arguments_do_not_outlive_the_run(auth_server: TrackingServer) -> None:
    settings = mm.Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=auth_server.admin_password,
    )
    with mm.tracking_run("auth", settings=settings):
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == auth_server.admin_password
        mlflow.log_metric("auc", 0.9)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    assert auth_server.admin_password not in repr(dict(os.environ))


def test_credentials_embedded_in_the_uri_work(auth_server: TrackingServer) -> None:
    url = auth_server.url.replace(
        "http://", f"http://{auth_server.admin_username}:{auth_server.admin_password}@"
    )
    settings = mm.Settings(tracking_uri=url)
    with mm.tracking_run("auth", settings=settings) as run:
        assert mlflow.get_tracking_uri() == auth_server.url  # credentials moved out of the URI
        mlflow.log_metric("auc", 0.9)
    stored = read_as_admin(auth_server, run.info.run_id)
    assert (stored.info.status, stored.data.metrics) == ("FINISHED", {"auc": 0.9})
    assert auth_server.admin_password not in repr(stored.data.tags)


# --- provenance, params, redaction --------------------------------------------------


def test_provenance_tags(
    tracking_server: TrackingServer, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    monkeypatch.setenv("MA_PIPELINE_RUN_NAME", "train-fraud-x7k2")
    monkeypatch.setenv("UF_LOCAL_RUN", "1")

    @mm.tracked(experiment="provenance")
    def train() -> str:
        return mlflow.active_run().info.run_id  # type: ignore[union-attr]

    tags = read(client, train()).data.tags
    assert tags["michelangelo.namespace"] == "ml-team"
    assert tags["michelangelo.pipeline_run"] == "train-fraud-x7k2"
    assert tags["michelangelo.task"] == f"{__name__}.test_provenance_tags.<locals>.train"
    assert tags["michelangelo.execution"] == "local"
    assert tags["michelangelo.sdk_version"] == mm.__version__
    assert tags["michelangelo.host"]
    assert tags["michelangelo.mlflow_client"] == mlflow.__version__
    assert tags["mlflow.source.name"]  # MLflow's own source tags are kept
    assert tags["mlflow.user"]


def test_params_are_flattened_and_secrets_redacted(
    settings: mm.Settings, client: MlflowClient
) -> None:
    params = {
        "lr": 0.1,
        "model": {"depth": 6, "api_key": "sk-live-123"},
        "warehouse": {"password": "hunter2", "host": "db"},
        "max_tokens": 256,
    }
    tags = {"team": "fraud", "AWS_SECRET_ACCESS_KEY": "abc"}
    with mm.tracking_run("redaction", params=params, tags=tags, settings=settings) as run:
        pass
    stored = read(client, run.info.run_id)
    assert stored.data.params == {
        "lr": "0.1",
        "model.depth": "6",
        "model.api_key": REDACTED,
        "warehouse.password": REDACTED,
        "warehouse.host": "db",
        "max_tokens": "256",
    }
    assert stored.data.tags["AWS_SECRET_ACCESS_KEY"] == REDACTED
    assert stored.data.tags["team"] == "fraud"


def test_a_configured_secret_is_redacted_wherever_it_appears(
    auth_server: TrackingServer,
) -> None:
    settings = mm.Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=auth_server.admin_password,
    )
    with pytest.raises(RuntimeError):
        with mm.tracking_run(
            "redaction",
            params={"connection": f"{auth_server.admin_password}@db"},
            settings=settings,
        ) as run:
            raise RuntimeError(f"login with {auth_server.admin_password} failed")
    stored = read_as_admin(auth_server, run.info.run_id)
    assert stored.data.params["connection"] == f"{REDACTED}@db"
    assert stored.data.tags["michelangelo.error.message"] == f"login with {REDACTED} failed"
    assert auth_server.admin_password not in repr(stored.data.tags)


def test_long_values_are_truncated_with_a_warning(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.warns(MichelangeloMlflowWarning, match="'notes' is 7000 characters"):
        with mm.tracking_run("limits", params={"notes": "x" * 7000}, settings=settings) as run:
            pass
    value = read(client, run.info.run_id).data.params["notes"]
    assert len(value) == 6000
    assert value.endswith(TRUNCATED)


def test_more_params_than_one_batch(settings: mm.Settings, client: MlflowClient) -> None:
    params = {f"feature_{i:03d}": i for i in range(250)}
    with mm.tracking_run("limits", params=params, settings=settings) as run:
        pass
    assert len(read(client, run.info.run_id).data.params) == 250


def test_too_long_key_is_an_error_before_any_call(
    settings: mm.Settings, client: MlflowClient
) -> None:
    experiment = f"limits-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigurationError, match="251 characters long"):
        with mm.tracking_run(experiment, params={"k" * 251: 1}, settings=settings):
            pass
    assert mlflow.active_run() is None
    assert client.get_experiment_by_name(experiment) is None  # nothing reached the server


def test_deleted_experiment_is_a_clear_error(settings: mm.Settings, client: MlflowClient) -> None:
    experiment_id = client.create_experiment("to-delete")
    client.delete_experiment(experiment_id)
    with pytest.raises(ConfigurationError, match=r"'to-delete'.*is deleted"):
        with mm.tracking_run("to-delete", settings=settings):
            pass


def test_experiment_id_from_the_environment(
    tracking_server: TrackingServer, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id = client.create_experiment("by-id")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    with mm.tracking_run() as run:
        pass
    assert run.info.experiment_id == experiment_id


# --- the decorator ------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    lr: float = 0.1
    depth: int = 6


def train_model(train_data: list[int], config: dict[str, object], seed: int = 7) -> int:
    """Train on ``train_data``."""
    mlflow.log_metric("auc", 0.91)
    return len(train_data)


def test_tracked_preserves_metadata_and_signature() -> None:
    wrapped = mm.tracked(experiment="decorator", log_params="config")(train_model)
    assert wrapped.__wrapped__ is train_model  # type: ignore[attr-defined]
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
        assert getattr(wrapped, attribute) == getattr(train_model, attribute)
    assert inspect.signature(wrapped) == inspect.signature(train_model)


@pytest.mark.parametrize("form", ["bare", "called", "called-empty"])
def test_tracked_bare_and_called(
    settings: mm.Settings, client: MlflowClient, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    experiment = f"decorator-{form}-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.effective_tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    decorated = {
        "bare": mm.tracked(train_model),
        "called": mm.tracked(experiment=experiment, run_name="named")(train_model),
        "called-empty": mm.tracked()(train_model),
    }[form]
    assert decorated([1, 2, 3], {}) == 3
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    (run,) = client.search_runs([found.experiment_id])
    assert run.info.run_name == ("named" if form == "called" else "train_model")
    assert run.data.metrics == {"auc": 0.91}
    assert run.info.status == "FINISHED"


def test_description_is_stored_redacted(auth_server: TrackingServer) -> None:
    secret = auth_server.admin_password
    settings = mm.Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=secret,
    )
    description = f"retrain with {secret}; source postgresql://etl:pw@db/features"
    with mm.tracking_run("redaction", description=description, settings=settings) as run:
        pass
    note = read_as_admin(auth_server, run.info.run_id).data.tags["mlflow.note.content"]
    assert note == f"retrain with {REDACTED}; source postgresql://etl:{REDACTED}@db/features"


def test_a_resumed_run_that_succeeds_supersedes_the_earlier_error(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.raises(OSError, match="disk full"):
        with mm.tracking_run("resume", "flaky", settings=settings) as first:
            raise OSError("disk full")
    with mm.tracking_run(run_id=first.info.run_id, settings=settings):
        mlflow.log_metric("auc", 0.9)
    tags = client.get_run(first.info.run_id).data.tags
    assert "michelangelo.error.type" not in tags
    assert "michelangelo.error.message" not in tags
    assert tags["michelangelo.previous_error.type"] == "OSError"
    assert tags["michelangelo.previous_error.message"] == "disk full"
    assert client.get_run(first.info.run_id).info.status == "FINISHED"


def test_tracked_logs_named_parameters(settings: mm.Settings, client: MlflowClient) -> None:
    captured: list[str] = []

    @mm.tracked(experiment="decorator", run_name="xgb", log_params=("config", "seed", "cfg"),
                settings=settings)  # fmt: skip
    def train(data: list[int], config: dict[str, object], cfg: TrainConfig, seed: int = 7) -> None:
        captured.append(mlflow.active_run().info.run_id)  # type: ignore[union-attr]

    train([1], {"n_estimators": 10, "optimizer": {"lr": 0.1}}, TrainConfig())
    stored = read(client, captured[0])
    assert stored.data.params == {
        "n_estimators": "10",
        "optimizer.lr": "0.1",
        "seed": "7",
        "lr": "0.1",
        "depth": "6",
    }
    assert stored.info.run_name == "xgb"


def test_tracked_rejects_unknown_log_params_at_decoration() -> None:
    with pytest.raises(ConfigurationError, match=r"'cfg'.*does not have") as info:
        mm.tracked(log_params="cfg")(train_model)
    assert "train_data, config, seed" in str(info.value)


def test_tracked_rejects_generators() -> None:
    def batches() -> Iterator[int]:
        yield 1

    with pytest.raises(ConfigurationError, match="generator"):
        mm.tracked(batches)


def test_tracked_async_function(settings: mm.Settings, client: MlflowClient) -> None:
    @mm.tracked(experiment="decorator", settings=settings)
    async def evaluate(x: int) -> str:
        mlflow.log_metric("x", x)
        return mlflow.active_run().info.run_id  # type: ignore[union-attr]

    run_id = asyncio.run(evaluate(5))
    stored = read(client, run_id)
    assert (stored.info.status, stored.data.metrics) == ("FINISHED", {"x": 5})


def test_tracked_failure_marks_failed(settings: mm.Settings, client: MlflowClient) -> None:
    run_ids: list[str] = []

    @mm.tracked(experiment="decorator", settings=settings)
    def broken() -> None:
        run_ids.append(mlflow.active_run().info.run_id)  # type: ignore[union-attr]
        raise ZeroDivisionError("division by zero")

    with pytest.raises(ZeroDivisionError):
        broken()
    stored = read(client, run_ids[0])
    assert stored.info.status == "FAILED"
    assert stored.data.tags["michelangelo.error.type"] == "ZeroDivisionError"


@pytest.mark.parametrize(
    ("module", "requirement"), [("mlflow", "mlflow>=2.22,<4"), ("databricks", "databricks-sdk")]
)
def test_a_broken_mlflow_install_names_the_requirement(
    module: str, requirement: str, tmp_path: Path
) -> None:
    # `import mlflow` fails without MLflow, and also without databricks-sdk.
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "import michelangelo_mlflow as mm\n"
        "try:\n"
        "    with mm.tracking_run('x'):\n"
        "        pass\n"
        "except mm.exceptions.MissingDependencyError as exc:\n"
        "    print(exc.requirement)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.strip() == requirement, result.stderr[-2000:]
