"""Shared helpers for the training-framework tests (``nox -s frameworks``).

Each test trains a tiny model on the CPU with data made in the test, against a real
``mlflow server`` (the ``tracking_server`` of ``tests/conftest.py``, or one of the
test's own that it kills and restarts), and compares what landed on the server with
what the framework itself recorded.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer

PARENT = "mlflow.parentRunId"


def experiment_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def runs_of(client: MlflowClient, name: str) -> list[Run]:
    """Every run of the experiment ``name`` (none when it does not exist)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], max_results=1000))


def all_run_ids(client: MlflowClient) -> set[str]:
    """Every run on the server, for "no stray run anywhere" checks."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(experiments, max_results=50_000)}


def children_of(client: MlflowClient, run_id: str) -> list[Run]:
    """The runs whose ``mlflow.parentRunId`` is ``run_id``, in any experiment."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments, filter_string=f"tags.`{PARENT}` = '{run_id}'"))


def points(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


class Outage:
    """Kill a server by its pid at some step and restart it (same port, same store).

    ``kill()`` is called from the training loop; the restart runs in a thread so
    that training goes on during the outage, as it would in a pod.
    """

    def __init__(self, server: TrackingServer) -> None:
        self.server = server
        self.killed_at: int | None = None
        self._restart: threading.Thread | None = None

    def kill(self, step: int) -> None:
        if self.killed_at is not None:
            return
        self.killed_at = step
        self.server.kill()
        self._restart = threading.Thread(target=self.server.restart, daemon=True)
        self._restart.start()

    def wait_restarted(self) -> None:
        assert self._restart is not None, "the server was never killed"
        self._restart.join(120)
        assert not self._restart.is_alive(), "the server did not restart in 120 s"


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A server of this test's own, which the test may kill and restart."""
    with TrackingServer(tmp_path_factory.mktemp("killable")) as server:
        yield server


def dict_of(run: Run) -> dict[str, Any]:
    """A run's id, status and parent, for readable assertion messages."""
    return {"id": run.info.run_id, "status": run.info.status, "parent": run.data.tags.get(PARENT)}
