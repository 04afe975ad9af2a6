"""Many tasks, one tracking server: 16 processes at once lose nothing, with or without an outage.

The CI version of ``benchmarks/fanout.py``: 16 task processes, started together from
one working directory (so they share the default spool directory), each log 500
points with ``mlflow.log_metric`` in their own ``mm.tracking_run`` against one real
``mlflow server`` (sqlite, 1 worker). Each task asks the server for its run's history
right after its block ended. Completeness and zero failures are asserted, never time.

One test takes the shared spool directory to the issue's scale: 64 processes starting
and ending at staggered moments in one working directory, beside a killed writer's
leftover, none crashing, failing or losing a point on another's files.
"""

from __future__ import annotations

import json
import re
import socket
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
from tests.helpers.processes import end, start_together, sync_cli

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
    url: str,
    experiment: str,
    workdir: Path,
    interval: float,
    *,
    tasks: int = TASKS,
    points: int = POINTS,
    stagger: float = 0.0,
) -> list[subprocess.Popen[str]]:
    """Start the tasks in ``workdir``, wait until each is ready, and tell them to go.

    ``stagger`` seconds pass between one task's "go" and the next one's.
    """
    workdir.mkdir(exist_ok=True)
    command = [sys.executable, str(TASK), url, experiment, str(points), str(interval)]
    return start_together(command, tasks, cwd=workdir, stagger=stagger)


def finish_tasks(tasks: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for every task; assert each exited 0 and return what each saw at its block end.

    Each result also holds the task's ``stderr``.
    """
    results = []
    try:
        for task in tasks:
            out, err = task.communicate(timeout=TASK_TIMEOUT)
            lines = [ln for ln in out.splitlines() if ln.startswith("result ")]
            assert task.returncode == 0, f"exit {task.returncode}:\n{err[-3000:]}"
            assert lines, f"no result line:\n{out[-1000:]}\n{err[-3000:]}"
            results.append({**json.loads(lines[0].split(" ", 1)[1]), "stderr": err})
    finally:
        for task in tasks:
            end(task)
    return results


def assert_complete(
    client: MlflowClient,
    experiment: str,
    results: list[dict[str, Any]],
    *,
    points: int = POINTS,
) -> None:
    """Every task saw its points at its block end; every run is whole, FINISHED, unduplicated."""
    assert [r["error"] for r in results] == [None] * len(results)
    incomplete = {r["run_id"]: r["seen"] for r in results if r["seen"] != points}
    said = sorted({w for r in results if r["seen"] != points for w in r["warnings"]})
    assert incomplete == {}, f"fewer than {points} points at block end: {incomplete}; {said}"
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    assert sorted(r.info.run_id for r in runs) == sorted(r["run_id"] for r in results)
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_id
        history = client.get_metric_history(run.info.run_id, "loss")
        points_seen = sorted((m.step, m.value) for m in history)
        assert points_seen == [(step, value(step)) for step in range(points)], run.info.run_id


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


def test_sixty_four_processes_share_one_spool_directory(
    own_server: TrackingServer, tmp_path: Path
) -> None:
    """64 processes in one working directory, beside a killed writer's leftover.

    They start 30 ms apart and log for about half a second each, so some scan the
    shared directory for leftovers while others remove their finished runs' files
    (what once raised ``FileNotFoundError`` in one of 64 tasks' start), and all of
    them may try to adopt the killed writer's database at once.
    """
    client = MlflowClient(own_server.url)
    client.create_experiment("shared-dir")
    victim_experiment = client.create_experiment("shared-dir-killed")
    workdir = tmp_path / "work"
    (victim,) = start_tasks(
        own_server.url, "shared-dir-killed", workdir, 0.01, tasks=1, points=10**6
    )
    try:
        wait_for_runs(client, "shared-dir-killed", 1, timeout=300)
        time.sleep(1.0)  # some 100 points logged; its last records may not be sent yet
    finally:
        victim.kill()
        victim.wait(timeout=30)
    (killed_run,) = client.search_runs([victim_experiment])
    spool = workdir / ".michelangelo-mlflow-spool"
    assert any(p.name.startswith(f"{socket.gethostname()}-{victim.pid}-") for p in spool.iterdir())

    tasks = start_tasks(
        own_server.url, "shared-dir", workdir, 0.005, tasks=64, points=100, stagger=0.03
    )
    pids = [task.pid for task in tasks]
    results = finish_tasks(tasks)

    assert_complete(client, "shared-dir", results, points=100)
    assert [r["warnings"] for r in results] == [[]] * 64
    assert [r for r in results if "Traceback" in r["stderr"]] == []
    # Each task removed its own files, and only those.
    own = re.compile("|".join(rf"-{pid}-" for pid in pids))
    assert sorted(p.name for p in spool.iterdir() if own.search(p.name)) == []

    # Whatever the tasks left of the killed writer's run, sync finishes: every point
    # whose record was stored, in order, and the run ended KILLED.
    sync = sync_cli(workdir, own_server.url)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    stored = client.get_run(killed_run.info.run_id)
    assert stored.info.status == "KILLED"
    steps = sorted(m.step for m in client.get_metric_history(stored.info.run_id, "loss"))
    assert steps, "the killed writer's points are lost"
    assert steps == list(range(len(steps)))
    left = sorted(p.name for p in spool.iterdir()) if spool.exists() else []
    assert left == []  # sync removed the killed writer's files; nothing else was left
