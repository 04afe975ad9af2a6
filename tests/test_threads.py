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


def two_servers(plain: TrackingServer, auth: TrackingServer) -> tuple[mm.Settings, mm.Settings]:
    """Settings of the plain server, and of the basic-auth server as its admin."""
    return mm.Settings(tracking_uri=plain.url), mm.Settings(
        tracking_uri=auth.url,
        tracking_username=auth.admin_username,
        tracking_password=auth.admin_password,
    )


@pytest.mark.filterwarnings("default::michelangelo_mlflow.exceptions.MichelangeloMlflowWarning")
def test_eight_threads_on_two_servers_each_land_on_their_own(
    tracking_server: TrackingServer, auth_server: TrackingServer
) -> None:
    plain, auth = two_servers(tracking_server, auth_server)
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


@pytest.mark.filterwarnings("default::michelangelo_mlflow.exceptions.MichelangeloMlflowWarning")
def test_when_the_holding_run_ends_first_the_globals_go_to_the_routed_run(
    tracking_server: TrackingServer, auth_server: TrackingServer
) -> None:
    plain, auth = two_servers(tracking_server, auth_server)
    before = mlflow.get_tracking_uri()
    holder_open, routed_open, holder_closed = (threading.Event() for _ in range(3))
    seen: dict[str, object] = {}
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with mm.tracking_run("hand-over", "holder", settings=plain):
                holder_open.set()
                assert routed_open.wait(60)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            holder_open.set()
            holder_closed.set()

    def routed() -> None:
        try:
            assert holder_open.wait(60)
            with mm.tracking_run("hand-over", "routed", settings=auth) as run:
                routed_open.set()
                assert holder_closed.wait(60)
                seen["uri"] = mlflow.get_tracking_uri()  # handed over, not restored
                mlflow.log_metric("after", 1.0)
                with mlflow.start_run(nested=True) as child:  # the fluent API, unrouted
                    mlflow.log_metric("child", 2.0)
                seen["run"], seen["child"] = run.info.run_id, child.info.run_id
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            routed_open.set()

    threads = [threading.Thread(target=holder), threading.Thread(target=routed)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert seen["uri"] == auth_server.url
    stored = read_as_admin(auth_server, str(seen["run"]))
    assert (stored.info.status, stored.data.metrics) == ("FINISHED", {"after": 1.0})
    child = read_as_admin(auth_server, str(seen["child"]))
    assert child.data.metrics == {"child": 2.0}
    assert child.data.tags["mlflow.parentRunId"] == seen["run"]
    assert mlflow.get_tracking_uri() == before
