"""Where the SDK once did worse than plain MLflow: each case against a real server.

Statuses written by others, refusals, numpy values, routing to another server, a
server restarted on a fresh database, closing runs with children in order, and a
resumed run that finds its earlier attempt's leftovers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import TrackingError
from michelangelo_mlflow.testing import TrackingServer
from tests._proxy import FaultProxy

LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"


def steps(client: MlflowClient, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# --- the block decides the status -------------------------------------------------------
def test_a_frameworks_finalize_never_ends_the_tracked_run_early(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.raises(RuntimeError, match="after fit"):
        with mm.tracking_run("status-rules", "lightning-like", settings=settings) as run:
            run_id = run.info.run_id
            mlflow.log_metric("loss", 0.5)
            MlflowClient().set_terminated(run_id, "FINISHED")  # MLFlowLogger.finalize()
            assert client.get_run(run_id).info.status == "RUNNING"  # held: the task goes on
            raise RuntimeError("the task failed after fit")
    assert client.get_run(run_id).info.status == "FAILED"  # a failure wins over FINISHED


@pytest.mark.parametrize("spool", ["on", "off"])
def test_an_explicit_end_run_failed_stays_failed(
    tracking_server: TrackingServer, client: MlflowClient, spool: str
) -> None:
    settings = mm.Settings(tracking_uri=tracking_server.url, spool=spool)  # type: ignore[arg-type]
    with mm.tracking_run("status-rules", f"end-run-failed-{spool}", settings=settings) as run:
        mlflow.log_metric("loss", 0.5)
        mlflow.end_run("FAILED")
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_start_run_then_end_run_then_exit_is_finished(
    tracking_server: TrackingServer, client: MlflowClient, tmp_path: Path
) -> None:
    script = (
        "import mlflow, michelangelo_mlflow as mm\n"
        "run = mm.start_run(experiment='status-rules')\n"
        "mlflow.log_metric('loss', 0.5)\n"
        "mlflow.end_run()\n"
        "print(run.run_id)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server.url}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stored = client.get_run(result.stdout.split()[-1])
    assert stored.info.status == "FINISHED"
    assert "michelangelo.error.type" not in stored.data.tags
    assert stored.data.metrics == {"loss": 0.5}


# --- refusals never block the rest --------------------------------------------------------
def test_deleting_a_tag_never_set_blocks_nothing_else(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.raises(TrackingError, match="never-set") as info:
        with mm.tracking_run("refusals", "delete-tag", settings=settings) as run:
            mlflow.delete_tag("never-set")
            for step in range(100):
                mlflow.log_metric("loss", 0.5, step=step)
            mlflow.log_param("lr", 0.1)
    assert info.value.run_id == run.info.run_id
    stored = client.get_run(run.info.run_id)
    assert steps(client, run.info.run_id) == list(range(100))
    assert stored.data.params == {"lr": "0.1"}
    assert stored.info.status == "FINISHED"


def test_a_refusal_in_a_nested_tracked_run_is_named_when_the_outer_block_ends(
    settings: mm.Settings, client: MlflowClient
) -> None:
    """Plain MLflow raised at the call, which the body caught: the outer block goes on."""
    with pytest.raises(TrackingError, match="never-set") as info:
        with mm.tracking_run("refusals", "outer", settings=settings) as outer:
            with mm.tracking_run(run_name="inner", nested=True) as inner:
                # What a user writes for plain MLflow, which raises here; the SDK returns
                # (the server answers later):
                with contextlib.suppress(Exception):
                    mlflow.delete_tag("never-set")
                mlflow.log_param("lr", 0.1)
            mlflow.log_param("after", "the nested block")  # the outer block goes on
    assert info.value.run_id == inner.info.run_id
    assert client.get_run(inner.info.run_id).data.params == {"lr": "0.1"}
    stored = client.get_run(outer.info.run_id)
    assert stored.data.params == {"after": "the nested block"}
    assert stored.info.status == "FINISHED"  # as the outer block ended: no exception in it
    assert client.get_run(inner.info.run_id).info.status == "FINISHED"


def test_an_artifact_refused_with_413_is_raised_at_the_call(
    proxy: FaultProxy, client: MlflowClient, tmp_path: Path
) -> None:
    settings = mm.Settings(tracking_uri=proxy.url)
    artifact = tmp_path / "big.txt"
    artifact.write_text("x" * 1000)
    with mm.tracking_run("refusals", "artifact-413", settings=settings) as run:
        proxy.refuse("/api/2.0/mlflow-artifacts/artifacts", 413)
        with pytest.raises(Exception, match="413"):
            mlflow.log_artifact(str(artifact))  # the server answered: raised, as in MLflow
        for step in range(50):
            mlflow.log_metric("loss", 0.5, step=step)
    assert steps(client, run.info.run_id) == list(range(50))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


# --- values as MLflow takes them ---------------------------------------------------------
def test_numpy_values_steps_and_timestamps(settings: mm.Settings, client: MlflowClient) -> None:
    with mm.tracking_run("values", "numpy", settings=settings) as run:
        mlflow.log_metric("loss", np.float32(0.5), step=np.int64(3))
        mlflow.log_metric("acc", np.float64(0.75), step=np.int32(4), timestamp=np.int64(1000))
        run_id = run.info.run_id
        MlflowClient().log_batch(run_id, metrics=[Metric("n", np.int64(2), 1, 0)])
    history = {
        key: [
            (m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)
        ]
        for key in ("loss", "acc", "n")
    }
    assert history["loss"][0][:2] == (3, 0.5)
    assert history["acc"] == [(4, 0.75, 1000)]
    assert history["n"] == [(0, 2.0, 1)]


# --- routing ------------------------------------------------------------------------------
def test_a_client_built_for_another_server_creates_its_run_there(
    settings: mm.Settings, other_server: TrackingServer
) -> None:
    other = MlflowClient(other_server.url)
    experiment = other.create_experiment(f"routing-{time.time_ns()}")
    with mm.tracking_run("routing", settings=settings):
        created = other.create_run(experiment)
    assert other.get_run(created.info.run_id).info.experiment_id == experiment
    with pytest.raises(Exception, match=r"RESOURCE_DOES_NOT_EXIST|not found"):
        MlflowClient(settings.effective_tracking_uri).get_run(created.info.run_id)


def test_a_server_restarted_on_a_fresh_database_gets_runs_in_the_right_experiment(
    own_server: TrackingServer,
) -> None:
    settings = mm.Settings(tracking_uri=own_server.url)
    with mm.tracking_run("wanted", settings=settings):
        pass
    own_server.kill()
    (own_server.root / "mlflow.db").unlink()
    own_server.restart()
    client = MlflowClient(own_server.url)
    other = client.create_experiment("someone-else")  # takes the id "wanted" had before
    with mm.tracking_run("wanted", settings=settings) as run:
        pass
    stored = client.get_run(run.info.run_id)
    assert stored.info.experiment_id != other
    assert client.get_experiment(stored.info.experiment_id).name == "wanted"


# --- closing in order ------------------------------------------------------------------------
def test_a_parents_status_is_sent_after_its_childrens_backlog(
    proxy: FaultProxy, client: MlflowClient
) -> None:
    settings = mm.Settings(tracking_uri=proxy.url)
    with mm.tracking_run("closing", "parent", settings=settings) as parent:
        with mlflow.start_run(nested=True) as child:  # creating a run needs the server
            proxy.mode = "503"
            for step in range(3000):
                mlflow.log_metric("loss", 0.5, step=step)
        mlflow.log_metric("parent", 1.0)
        proxy.mode = "forward"
    assert steps(client, child.info.run_id) == list(range(3000))
    assert client.get_run(child.info.run_id).info.status == "FINISHED"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    updates = [i for i, (_, path, _) in enumerate(proxy.log) if path.endswith("/runs/update")]
    batches = [i for i, (_, path, _) in enumerate(proxy.log) if path == LOG_BATCH]
    assert updates
    assert batches
    assert max(batches) < updates[-1]  # the parent's status is the last record sent


def test_a_resumed_run_replays_its_leftovers_before_next_step(
    own_server: TrackingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": own_server.url,
        "MICHELANGELO_MLFLOW_SPOOL_GRACE": "1",
    }
    first = (
        "import mlflow, michelangelo_mlflow as mm, os, sys\n"
        "with mm.tracking_run('resume', run_name='attempt') as run:\n"
        "    for step in range(50):\n"
        "        mlflow.log_metric('loss', 0.5, step=step)\n"
        "    print(run.info.run_id, flush=True)\n"
        "    sys.stdin.readline()  # the server is killed meanwhile\n"
        "    for step in range(50, 100):\n"
        "        mlflow.log_metric('loss', 0.5, step=step)\n"
        "    os._exit(3)  # the attempt dies: its last points stay in the spool\n"
    )
    attempt = subprocess.Popen(
        [sys.executable, "-c", first], env=env, cwd=tmp_path, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert attempt.stdout is not None
    assert attempt.stdin is not None
    run_id = attempt.stdout.readline().strip()
    own_server.kill()
    attempt.stdin.write("go on\n")
    attempt.stdin.flush()
    assert attempt.wait(timeout=180) == 3
    own_server.restart()
    settings = mm.Settings(tracking_uri=own_server.url)
    monkeypatch.chdir(tmp_path)  # where the first attempt left its spool
    with mm.tracking_run(run_id=run_id, settings=settings):
        start = mm.next_step("loss")
        for step in range(start, start + 10):
            mlflow.log_metric("loss", 0.25, step=step)
    client = MlflowClient(own_server.url)
    assert start == 100
    assert steps(client, run_id) == list(range(110))  # each step once
