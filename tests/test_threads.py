"""Tracked runs in several threads at once, on different servers with different credentials."""

from __future__ import annotations

import os
import threading

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer
from tests.helpers import read_as_admin

POINTS = 40


@pytest.mark.filterwarnings("default::michelangelo_mlflow.exceptions.MichelangeloMlflowWarning")
def test_eight_threads_on_two_servers_each_land_on_their_own(
    tracking_server: TrackingServer, auth_server: TrackingServer
) -> None:
    plain = mm.Settings(tracking_uri=tracking_server.url)
    auth = mm.Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=auth_server.admin_password,
    )
    before = (mlflow.get_tracking_uri(), dict(os.environ))
    start = threading.Barrier(8)
    runs: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []

    def task(index: int) -> None:
        settings = auth if index % 2 else plain
        try:
            start.wait(timeout=60)
            with mm.tracking_run("threads", f"thread-{index}", settings=settings) as run:
                for step in range(POINTS):
                    mlflow.log_metric("loss", index + step / 100, step=step)
                mlflow.set_tag("thread", str(index))
                runs[index] = (run.info.run_id, settings.safe_tracking_uri)
        except BaseException as exc:  # reported below, with the thread's index
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(runs) == 8
    for index, (run_id, uri) in runs.items():
        server = auth_server if index % 2 else tracking_server
        assert uri == server.url
        stored = read_as_admin(server, run_id) if index % 2 else MlflowClient(uri).get_run(run_id)
        assert stored.info.status == "FINISHED"
        assert stored.data.tags["thread"] == str(index)
        history = (
            MlflowClient(uri).get_metric_history(run_id, "loss")
            if not index % 2
            else _admin_history(auth_server, run_id)
        )
        assert sorted(m.step for m in history) == list(range(POINTS))
    after = (mlflow.get_tracking_uri(), dict(os.environ))
    names = before[1].keys() | after[1].keys()
    ours = {k for k in names if k.startswith(("MLFLOW_", "DATABRICKS_"))}
    changed = {k for k in ours if before[1].get(k) != after[1].get(k)}
    assert after[0] == before[0]
    assert not changed, {k: (before[1].get(k), after[1].get(k)) for k in changed}


def _admin_history(server: TrackingServer, run_id: str) -> list[mlflow.entities.Metric]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", server.admin_username)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
        return list(MlflowClient(server.url).get_metric_history(run_id, "loss"))
