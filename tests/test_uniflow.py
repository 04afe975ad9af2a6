"""@tracked composes with the real @uniflow.task decorator, in either order."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("michelangelo")  # not installable on 3.13: see noxfile.py

import michelangelo.uniflow.core as uniflow
import mlflow
from michelangelo.uniflow.core.decorator import TaskFunction
from michelangelo.uniflow.core.utils import dot_path
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer
from tests.helpers.uniflow import LocalTask


@pytest.fixture
def pipeline_env(tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    monkeypatch.setenv("MA_PIPELINE_RUN_NAME", "fraud-pipeline-run-1")
    monkeypatch.setenv("UF_LOCAL_RUN", "1")


config = LocalTask()


@uniflow.task(config=config)
@mm.tracked(experiment="uniflow", log_params="params")
def task_over_tracked(rows: list[int], params: dict[str, object]) -> str:
    """Uniflow outside, tracked inside."""
    mlflow.log_metric("rows", len(rows))
    return mlflow.active_run().info.run_id  # type: ignore[union-attr]


@mm.tracked(experiment="uniflow", log_params="params")
@uniflow.task(config=config)
def tracked_over_task(rows: list[int], params: dict[str, object]) -> str:
    """Tracked outside, uniflow inside."""
    mlflow.log_metric("rows", len(rows))
    return mlflow.active_run().info.run_id  # type: ignore[union-attr]


@pytest.mark.parametrize("task", [task_over_tracked, tracked_over_task])
def test_either_order_stays_a_uniflow_task(task: object) -> None:
    assert isinstance(task, TaskFunction)
    original = inspect.unwrap(task.fn)  # type: ignore[attr-defined]
    assert dot_path(task.fn) == f"{__name__}.{original.__qualname__}"  # type: ignore[attr-defined]
    assert list(inspect.signature(task.fn).parameters) == ["rows", "params"]  # type: ignore[attr-defined]


@pytest.mark.usefixtures("pipeline_env")
@pytest.mark.parametrize("task", [task_over_tracked, tracked_over_task])
def test_either_order_tracks_the_task_run(
    task: TaskFunction, tracking_server: TrackingServer
) -> None:  # type: ignore[type-arg]
    before = config.runs
    run_id = task([1, 2, 3], {"lr": 0.1})
    assert config.runs == before + 1  # the uniflow lifecycle ran
    stored = MlflowClient(tracking_server.url).get_run(run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"rows": 3}
    assert stored.data.params == {"lr": "0.1"}
    assert stored.data.tags["michelangelo.task"] == dot_path(inspect.unwrap(task.fn))
    assert stored.data.tags["michelangelo.pipeline_run"] == "fraud-pipeline-run-1"
    assert stored.data.tags["michelangelo.execution"] == "local"


@pytest.mark.usefixtures("pipeline_env")
def test_a_failing_task_fails_its_run(tracking_server: TrackingServer) -> None:
    run_ids: list[str] = []

    @uniflow.task(config=config)
    @mm.tracked(experiment="uniflow")
    def flaky() -> None:
        run_ids.append(mlflow.active_run().info.run_id)  # type: ignore[union-attr]
        raise OSError("feature store timed out")

    with pytest.raises(OSError, match="feature store timed out"):
        flaky()
    stored = MlflowClient(tracking_server.url).get_run(run_ids[0])
    assert stored.info.status == "FAILED"
    assert stored.data.tags["michelangelo.error.type"] == "OSError"
