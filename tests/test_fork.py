"""Forked, spawned and forkserver children log into the run as they do with plain MLflow.

Each program runs twice in a fresh interpreter against the same real server: inside
``mm.tracking_run`` and inside plain ``mlflow.start_run``. What lands must be the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer
from tests.helpers.fork_programs import POINTS, WORKERS

ROOT = Path(__file__).resolve().parent.parent


def run_program(program: str, mode: str, url: str, experiment: str, cwd: Path) -> str:
    """Run one program; the top-level run's id (its output's last line)."""
    return program_output(program, mode, url, experiment, cwd)[-1]


def program_output(program: str, mode: str, url: str, experiment: str, cwd: Path) -> list[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.fork_programs", program, mode, experiment],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,  # a hang (an inherited lock held forever) fails here
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def landed(client: MlflowClient, run_id: str) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    run = client.get_run(run_id)
    points = {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    }
    return run.info.status, points


@pytest.mark.parametrize("program", ["pool", "exit-at-once", "own-run", "spawn", "forkserver"])
def test_children_log_what_plain_mlflow_would(
    program: str, tracking_server: TrackingServer, client: MlflowClient, tmp_path: Path
) -> None:
    experiment = f"fork-{program}-{tmp_path.name}"
    plain = run_program(program, "plain", tracking_server.url, experiment + "-plain", tmp_path)
    ours = run_program(program, "sdk", tracking_server.url, experiment, tmp_path)
    assert landed(client, ours) == landed(client, plain)
    status, points = landed(client, ours)
    assert status == "FINISHED"
    expected = {"pool": WORKERS, "spawn": 2, "forkserver": 2, "exit-at-once": 2}.get(program, 1)
    assert len(points) == expected
    assert all(len(history) == POINTS for history in points.values())
    assert not (tmp_path / ".michelangelo-mlflow-spool").exists()  # all delivered, all removed


def test_a_forked_child_handles_sigterm_as_it_would_without_the_sdk(
    tracking_server: TrackingServer, client: MlflowClient, tmp_path: Path
) -> None:
    # A child inherits the SDK's handler with the fork: restored at the fork, SIGTERM is
    # the kernel's default again, whichever of the child's threads the kernel gives it to.
    for mode in ("plain", "sdk"):
        experiment = f"term-{mode}-{tmp_path.name}"
        output = program_output(
            "terminate-waiting-child", mode, tracking_server.url, experiment, tmp_path
        )
        assert "child SIGTERM default: True" in output, output
        assert len(client.get_metric_history(output[-1], "w0")) == POINTS


def test_a_child_with_its_own_tracked_run_finishes_it(
    tracking_server: TrackingServer, client: MlflowClient, tmp_path: Path
) -> None:
    experiment = f"fork-own-{tmp_path.name}"
    parent = run_program("own-run", "sdk", tracking_server.url, experiment, tmp_path)
    found = client.search_runs(
        [client.get_experiment_by_name(experiment + "-child").experiment_id]  # type: ignore[union-attr]
    )
    (child,) = found
    assert child.info.status == "FINISHED"
    assert len(client.get_metric_history(child.info.run_id, "child")) == POINTS
    assert child.info.run_id != parent
    assert client.get_run(parent).info.status == "FINISHED"
