"""Many tasks, one tracking server: 16 processes at once lose nothing, with or without an outage.

The CI version of ``benchmarks/fanout.py``: 16 task processes, started together from
one working directory (so they share the default spool directory), each log 500
points with ``mlflow.log_metric`` in their own ``mm.tracking_run`` against one real
``mlflow server`` (sqlite, 1 worker). Each task asks the server for its run's history
right after its block ended. Completeness and zero failures are asserted, never time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer
from tests.helpers.fanout_task import value
from tests.helpers.processes import end, readline

pytestmark = pytest.mark.slow

TASKS = 16
POINTS = 500
TASK = Path(__file__).parent / "helpers" / "fanout_task.py"
TASK_TIMEOUT = 900.0  # a bound so that a hanging task fails the test, not a speed target


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A server of this test's own, which the test may kill and restart."""
    with TrackingServer(tmp_path_factory.mktemp("fanout")) as server:
        yield server


def start_tasks(
    url: str, experiment: str, workdir: Path, interval: float
) -> list[subprocess.Popen[str]]:
    """Start the tasks in ``workdir``, wait until each is ready, and tell them all to go."""
    workdir.mkdir()
    command = [sys.executable, str(TASK), url, experiment, str(POINTS), str(interval)]
    tasks = [
        subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(TASKS)
    ]
    try:
        for task in tasks:
            assert task.stdout is not None
            assert readline(task.stdout, 300).strip() == "ready", end(task)[1][-3000:]
        for task in tasks:
            assert task.stdin is not None
            task.stdin.write("go\n")
            task.stdin.flush()
    except BaseException:
        for task in tasks:
            end(task)
        raise
    return tasks


def finish_tasks(tasks: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for every task; assert each exited 0 and return what each saw at its block end."""
    results = []
    try:
        for task in tasks:
            out, err = task.communicate(timeout=TASK_TIMEOUT)
            lines = [ln for ln in out.splitlines() if ln.startswith("result ")]
            assert task.returncode == 0, f"exit {task.returncode}:\n{err[-3000:]}"
            assert lines, f"no result line:\n{out[-1000:]}\n{err[-3000:]}"
            results.append(json.loads(lines[0].split(" ", 1)[1]))
    finally:
        for task in tasks:
            end(task)
    return results


def assert_complete(client: MlflowClient, experiment: str, results: list[dict[str, Any]]) -> None:
    """Every task saw its points at its block end; every run is whole, FINISHED, unduplicated."""
    assert [r["error"] for r in results] == [None] * TASKS
    incomplete = {r["run_id"]: r["seen"] for r in results if r["seen"] != POINTS}
    said = sorted({w for r in results if r["seen"] != POINTS for w in r["warnings"]})
    assert incomplete == {}, f"fewer than {POINTS} points at block end: {incomplete}; {said}"
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=100)
    assert sorted(r.info.run_id for r in runs) == sorted(r["run_id"] for r in results)
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_id
        history = client.get_metric_history(run.info.run_id, "loss")
        points = sorted((m.step, m.value) for m in history)
        assert points == [(step, value(step)) for step in range(POINTS)], run.info.run_id


def wait_for_runs(client: MlflowClient, experiment: str, count: int, timeout: float) -> None:
    """Wait until ``count`` runs exist in ``experiment``: every task is inside its block."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        if found and len(client.search_runs([found.experiment_id])) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{count} runs were not created in {experiment!r} within {timeout} s")


def test_sixteen_tasks_at_once_lose_nothing(own_server: TrackingServer, tmp_path: Path) -> None:
    client = MlflowClient(own_server.url)
    client.create_experiment("fanout")
    tasks = start_tasks(own_server.url, "fanout", tmp_path / "work", interval=0.0)
    assert_complete(client, "fanout", finish_tasks(tasks))


def test_sixteen_tasks_through_an_outage_lose_nothing(
    own_server: TrackingServer, tmp_path: Path
) -> None:
    client = MlflowClient(own_server.url)
    client.create_experiment("fanout-outage")
    # 500 points at 10 ms of work each: every task is still in its block at the kill.
    tasks = start_tasks(own_server.url, "fanout-outage", tmp_path / "work", interval=0.01)
    try:
        wait_for_runs(client, "fanout-outage", TASKS, timeout=300)
        own_server.kill()
        assert [t.poll() for t in tasks] == [None] * TASKS  # the outage is mid-run
        time.sleep(5.0)
        own_server.restart()
    except BaseException:
        for task in tasks:
            end(task)
        raise
    assert_complete(client, "fanout-outage", finish_tasks(tasks))
