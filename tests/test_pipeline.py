"""Runs inside pipelines: retries, resume, the parent run, SIGTERM, against a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow._pipeline import ATTEMPT, PIPELINE_KEY, PREVIOUS_ATTEMPT, TASK_KEY
from michelangelo_mlflow.testing import TrackingServer
from tests.helpers.processes import end, readline

ROOT = Path(__file__).parent.parent


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses a test starts; any still running when it ends are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        end(process)


@pytest.fixture
def pipeline(
    tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """The environment of a task pod in its own pipeline run."""
    name = f"run-{request.node.name[:40]}-{time.time_ns()}".replace("[", "-").replace("]", "")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    monkeypatch.setenv("MA_PIPELINE_RUN_NAME", name)
    monkeypatch.setenv("UF_REMOTE_RUN", "1")
    return name


def runs_of(client: MlflowClient, task_key: str) -> list[mlflow.entities.Run]:
    experiment = client.get_experiment_by_name("pipelines")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TASK_KEY}` = '{task_key}'")
    return sorted(runs, key=lambda r: int(r.data.tags[ATTEMPT]))


def flaky_task(fail: bool) -> str:
    run = mlflow.active_run()
    assert run is not None
    if fail:
        raise ConnectionResetError("shuffle fetch failed")
    return run.info.run_id


tracked_flaky = mm.tracked(experiment="pipelines")(flaky_task)


@pytest.mark.usefixtures("pipeline")
def test_a_retry_is_a_new_attempt_linked_to_the_previous(client: MlflowClient) -> None:
    with pytest.raises(ConnectionResetError):
        tracked_flaky(fail=True)
    second = tracked_flaky(fail=False)
    key = client.get_run(second).data.tags[TASK_KEY]
    first, retried = runs_of(client, key)
    assert (first.info.status, first.data.tags[ATTEMPT]) == ("FAILED", "1")
    assert first.data.tags["michelangelo.error.type"] == "ConnectionResetError"
    assert (retried.info.run_id, retried.info.status) == (second, "FINISHED")
    assert retried.data.tags[ATTEMPT] == "2"
    assert retried.data.tags[PREVIOUS_ATTEMPT] == first.info.run_id


@pytest.mark.usefixtures("pipeline")
def test_resume_reopens_the_unfinished_attempt(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_ON_RETRY", "resume")
    steps: list[int] = []

    @mm.tracked(experiment="pipelines")
    def train(crash_at: int | None) -> str:
        start = mm.next_step("loss")
        steps.append(start)
        for step in range(start, 4):
            if step == crash_at:
                raise MemoryError("evicted")
            mlflow.log_metric("loss", 1 / (step + 1), step=step)
        return mlflow.active_run().info.run_id  # type: ignore[union-attr]

    with pytest.raises(MemoryError):
        train(crash_at=2)
    run_id = train(crash_at=None)
    assert steps == [0, 2]
    history = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    (only,) = runs_of(client, client.get_run(run_id).data.tags[TASK_KEY])
    assert (only.info.run_id, only.info.status) == (run_id, "FINISHED")


@pytest.mark.usefixtures("pipeline")
def test_a_finished_run_is_never_reopened(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_ON_RETRY", "resume")
    first = tracked_flaky(fail=False)
    again = tracked_flaky(fail=False)  # a resumed pipeline re-executes the task
    assert again != first
    assert client.get_run(again).data.tags[ATTEMPT] == "2"
    assert client.get_run(first).info.status == "FINISHED"


@pytest.mark.usefixtures("pipeline")
def test_explicit_key_and_run_name_identify_the_task(client: MlflowClient) -> None:
    with mm.tracking_run("pipelines", run_name="eval", key="evaluate") as a:
        pass
    with mm.tracking_run("pipelines", run_name="eval", key="evaluate") as b:
        pass
    with mm.tracking_run("pipelines", run_name="eval", key="other") as c:
        pass
    tags = [client.get_run(r.info.run_id).data.tags for r in (a, b, c)]
    assert tags[0][TASK_KEY] == tags[1][TASK_KEY] != tags[2][TASK_KEY]
    assert [t[ATTEMPT] for t in tags] == ["1", "2", "1"]


def test_no_task_key_outside_a_pipeline(
    tracking_server: TrackingServer, client: MlflowClient
) -> None:
    settings = mm.Settings(tracking_uri=tracking_server.url)
    with mm.tracking_run("pipelines", run_name="notebook", settings=settings) as run:
        pass
    assert TASK_KEY not in client.get_run(run.info.run_id).data.tags


@pytest.mark.usefixtures("pipeline")
def test_task_runs_nest_under_one_pipeline_parent(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch, pipeline: str
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_PIPELINE_RUN", "nested")
    with mm.tracking_run("pipelines", run_name="prepare") as prepare:
        pass
    with pytest.raises(ValueError, match="bad label"):
        with mm.tracking_run("pipelines", run_name="train") as train:
            raise ValueError("bad label")
    parent_ids = {
        client.get_run(r.info.run_id).data.tags["mlflow.parentRunId"] for r in (prepare, train)
    }
    assert len(parent_ids) == 1
    parent = client.get_run(parent_ids.pop())
    assert parent.info.run_name == pipeline
    assert parent.data.tags["michelangelo.role"] == "pipeline"
    assert parent.info.status == "FAILED"  # a task under it failed


def test_concurrent_starters_converge_on_one_parent(
    tracking_server: TrackingServer,
    client: MlflowClient,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    starters = 8
    for round_number in range(2):
        barrier = tmp_path / f"round-{round_number}"
        barrier.mkdir()
        pipeline_run = f"concurrent-{round_number}-{time.time_ns()}"
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_server.url,
            "MA_NAMESPACE": "ml-team",
            "MA_PIPELINE_RUN_NAME": pipeline_run,
            "MICHELANGELO_MLFLOW_PIPELINE_RUN": "nested",
        }
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.pipeline_task", "parent", str(barrier)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(starters)
        ]
        children.extend(processes)
        deadline = time.monotonic() + 120
        while len(list(barrier.glob("ready-*"))) < starters and time.monotonic() < deadline:
            time.sleep(0.05)
        (barrier / "go").touch()
        outputs = [p.communicate(timeout=120) for p in processes]
        assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in outputs]
        task_ids = {
            next(ln for ln in out.splitlines() if ln.startswith("run ")).split()[1]
            for out, _ in outputs
        }
        experiment = client.get_experiment_by_name("pipelines")
        assert experiment is not None
        survivors = client.search_runs(
            [experiment.experiment_id],
            f"tags.`{PIPELINE_KEY}` != '' and tags.`michelangelo.pipeline_run` = '{pipeline_run}'",
        )
        assert len(survivors) == 1, [r.info.run_id for r in survivors]
        (parent,) = survivors
        assert parent.info.status == "FINISHED"
        parents_of_tasks = {
            client.get_run(task).data.tags["mlflow.parentRunId"] for task in task_ids
        }
        assert parents_of_tasks == {parent.info.run_id}
        assert len(task_ids) == starters


def start_sleeper(
    mode: str, server: TrackingServer, barrier: Path, children: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.pipeline_task", mode, str(barrier)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(process)
    assert process.stdout is not None
    line = readline(process.stdout, timeout=120)
    if not line.startswith("run "):
        pytest.fail(f"the task did not start its run: {line!r}\n{end(process)[1][-3000:]}")
    return process, line.split()[1]


def test_sigterm_marks_the_run_killed_and_exits_as_before(
    tracking_server: TrackingServer,
    client: MlflowClient,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    process, run_id = start_sleeper("sleep", tracking_server, tmp_path, children)
    assert client.get_run(run_id).info.status == "RUNNING"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM  # died by the signal, as without us
    stored = client.get_run(run_id)
    assert stored.info.status == "KILLED"
    assert stored.data.tags["michelangelo.error.type"] == "michelangelo_mlflow._signals.Terminated"


def test_sigterm_chains_the_earlier_handler(
    tracking_server: TrackingServer,
    client: MlflowClient,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    process, run_id = start_sleeper("chain", tracking_server, tmp_path, children)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143  # the earlier handler's own exit
    assert (tmp_path / "chained").read_text() == str(int(signal.SIGTERM))
    assert client.get_run(run_id).info.status == "KILLED"


def test_the_earlier_handler_is_restored(tracking_server: TrackingServer) -> None:
    def earlier(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, earlier)
    try:
        with mm.tracking_run("pipelines", settings=mm.Settings(tracking_uri=tracking_server.url)):
            assert signal.getsignal(signal.SIGTERM) is not earlier
        assert signal.getsignal(signal.SIGTERM) is earlier
    finally:
        signal.signal(signal.SIGTERM, previous)
