"""The user's own exceptions pass through a tracked run untouched; MLflow's are translated.

The rule: an exception raised by the user's code between two library calls propagates
as is (same object, same type, same traceback) and the run is FAILED with its type
recorded; only a failure raised inside MLflow (or this SDK) becomes a typed error of
this SDK, chained with ``from``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import botocore.exceptions
import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    TrackingError,
)
from tests._faults import closed_port


class FeatureStoreError(MlflowException):
    """A team's own error type that happens to subclass MLflow's."""


def feature_store_refused() -> None:
    requests.get(f"http://127.0.0.1:{closed_port()}/features", timeout=2)  # a real refusal


def bigquery_import() -> None:
    import google.cloud.bigquery  # noqa: F401  -- not installed here


def own_s3_read() -> None:
    import boto3
    from botocore.config import Config

    # No credentials anywhere: botocore raises before any network call.
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id=None,
        aws_secret_access_key=None,
        config=Config(signature_version="s3v4"),
    )
    client.get_object(Bucket="features", Key="train.parquet")


def missing_key() -> None:
    {"rows": 1}["columns"]


def bad_value() -> None:
    int("not a number")


def own_mlflow_exception() -> None:
    raise FeatureStoreError("feature view 'fraud_v2' is stale")


CASES: dict[str, tuple[Callable[[], None], type[BaseException]]] = {
    "requests": (feature_store_refused, requests.ConnectionError),
    "import": (bigquery_import, ModuleNotFoundError),
    "botocore": (own_s3_read, botocore.exceptions.NoCredentialsError),
    "KeyError": (missing_key, KeyError),
    "ValueError": (bad_value, ValueError),
    "MlflowException": (own_mlflow_exception, FeatureStoreError),
}


@pytest.fixture(autouse=True)
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize("case", list(CASES))
def test_the_users_own_exception_passes_through_unchanged(
    case: str, settings: mm.Settings, client: MlflowClient
) -> None:
    raise_it, kind = CASES[case]
    with pytest.raises(BaseException) as expected:
        raise_it()
    with pytest.raises(BaseException) as info:
        with mm.tracking_run("user-errors", case, settings=settings) as run:
            raise_it()
    error = info.value
    assert type(error) is type(expected.value)  # same type as without the SDK
    assert isinstance(error, kind)
    assert not isinstance(error, MichelangeloMlflowError)
    assert error.__cause__ is expected.value.__cause__ or error.__cause__ is None
    frames = [tb.tb_frame.f_code.co_name for tb in _walk(error.__traceback__)]
    assert raise_it.__name__ in frames  # its own traceback, down to where it was raised
    stored = client.get_run(run.info.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["michelangelo.error.type"].endswith(type(error).__name__)


def test_the_same_object_propagates(settings: mm.Settings) -> None:
    error = KeyError("columns")
    with pytest.raises(KeyError) as info:
        with mm.tracking_run("user-errors", settings=settings):
            raise error
    assert info.value is error


def test_a_decorated_task_passes_its_own_exception_through(settings: mm.Settings) -> None:
    @mm.tracked(experiment="user-errors", settings=settings)
    def task() -> None:
        feature_store_refused()

    with pytest.raises(requests.ConnectionError) as info:
        task()
    assert "/features" in str(info.value)


def test_a_failing_plain_mlflow_call_is_translated_and_chained(
    settings: mm.Settings,
) -> None:
    with pytest.raises(TrackingError) as info:
        with mm.tracking_run("user-errors", "mlflow-call", settings=settings):
            mlflow.MlflowClient().get_run("0123456789abcdef0123456789abcdef")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert isinstance(info.value.__cause__, MlflowException)


def _walk(tb: object) -> list[object]:
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next  # type: ignore[attr-defined]
    return frames


# --- the upstream checkpoint pattern: mlflow.start_run(run_id=...) inside the block -----


def log_checkpoint(directory: str, run_id: str, *, nested: bool) -> None:
    """michelangelo-examples' log_checkpoint_to_mlflow, with and without nested=True."""
    with mlflow.start_run(run_id=run_id, nested=nested):
        mlflow.log_artifacts(directory, "checkpoint")


def test_start_run_with_the_tracked_runs_id_is_a_configuration_error(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights.pt").write_bytes(b"w" * 64)
    with pytest.raises(ConfigurationError, match="is active in this thread") as info:
        with mm.tracking_run("checkpoint-pattern", settings=settings) as run:
            log_checkpoint(str(tmp_path / "ckpt"), run.info.run_id, nested=False)
    error = info.value
    assert error.variable == "nested"
    assert "drop the `with mlflow.start_run(run_id=...)`" in (error.fix or "")
    assert "nested=True" in (error.fix or "")
    assert type(error.__cause__) is Exception  # MLflow's own, chained
    assert run.info.run_id in str(error)
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_a_users_bare_exception_with_mlflows_words_is_not_translated(
    settings: mm.Settings,
) -> None:
    text = "Run with UUID 0123 is already active. (the user's own)"
    with pytest.raises(Exception, match="the user's own") as info:
        with mm.tracking_run("checkpoint-pattern", settings=settings):
            raise Exception(text)  # a bare Exception, as MLflow raises it
    assert type(info.value) is Exception


def test_start_run_nested_true_logs_the_checkpoint_into_the_tracked_run(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights.pt").write_bytes(b"w" * 64)
    with mm.tracking_run("checkpoint-pattern", settings=settings) as run:
        log_checkpoint(str(tmp_path / "ckpt"), run.info.run_id, nested=True)
        mlflow.log_metric("after", 1.0)  # still the tracked run
        assert mlflow.active_run().info.run_id == run.info.run_id  # type: ignore[union-attr]
    stored = client.get_run(run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"after": 1.0}
    files = [f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")]
    assert files == ["checkpoint/weights.pt"]
    assert "mlflow.parentRunId" not in stored.data.tags  # not made a child of itself
