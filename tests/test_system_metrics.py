"""system_metrics=True: MLflow's system metrics for the run, stopped when it ends."""

from __future__ import annotations

import sys
import threading
import time
import uuid

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import ConfigurationError


@pytest.fixture(autouse=True)
def sample_every_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own setting: one sample a second, each logged at once (default: 10 s)."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")


def monitors() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()]


def system_series(client: MlflowClient, run_id: str) -> dict[str, int]:
    metrics = client.get_run(run_id).data.metrics
    return {
        key: len(client.get_metric_history(run_id, key))
        for key in metrics
        if key.startswith("system/")
    }


def test_cpu_and_memory_series_exist_after_a_short_run(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with mm.tracking_run(
        f"system-{uuid.uuid4().hex[:8]}", system_metrics=True, settings=settings
    ) as run:
        assert monitors()
        time.sleep(2.5)
    assert not monitors()  # stopped with the run
    series = system_series(client, run.info.run_id)
    assert series.get("system/cpu_utilization_percentage", 0) >= 1, series
    assert series.get("system/system_memory_usage_megabytes", 0) >= 1, series
    assert any(key.startswith("system/disk_") for key in series), series
    assert any(key.startswith("system/network_") for key in series), series
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_tracked_and_start_run_take_it_too(settings: mm.Settings, client: MlflowClient) -> None:
    @mm.tracked(experiment=f"system-{uuid.uuid4().hex[:8]}", system_metrics=True, settings=settings)
    def train() -> str:
        time.sleep(1.5)
        active = mlflow.active_run()
        assert active is not None
        return active.info.run_id

    tracked_id = train()
    run = mm.start_run(
        experiment=f"system-{uuid.uuid4().hex[:8]}", system_metrics=True, settings=settings
    )
    time.sleep(1.5)
    run.end()
    assert not monitors()
    for run_id in (tracked_id, run.run_id):
        assert "system/cpu_utilization_percentage" in system_series(client, run_id)


def test_false_wins_over_mlflows_global_switch(
    settings: mm.Settings, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    with mm.tracking_run(
        f"system-{uuid.uuid4().hex[:8]}", system_metrics=False, settings=settings
    ) as run:
        assert not monitors()
        time.sleep(1.2)
    assert system_series(client, run.info.run_id) == {}


def test_without_psutil_it_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # as if it were not installed
    for make in (
        lambda: mm.tracking_run("x", system_metrics=True),
        lambda: mm.tracked(experiment="x", system_metrics=True),
    ):
        with pytest.raises(ConfigurationError, match="psutil") as info:
            make()
        assert info.value.variable == "system_metrics"
        assert "michelangelo-mlflow[system-metrics]" in (info.value.fix or "")
