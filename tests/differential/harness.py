"""Run a program as a real task process, inject its faults at its barriers, read the server.

``Faults`` switches a fault on and off on the SDK's side: the tracking server killed by
its pid and restarted on the same port and store, a proxy answering 503 or hanging, or
the spool's small tmpfs filled up. ``run_task`` runs ``task.py`` and answers its
barriers; ``server_state`` reads what a server holds for one experiment, in a form two
executions are compared by.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer
from tests._proxy import FaultProxy
from tests.differential.program import Program
from tests.helpers.processes import readline

TASK = Path(__file__).with_name("task.py")
LINE_TIMEOUT = 180.0
"""Seconds without a line from the task before it counts as hung."""


class Faults:
    """The SDK side's faults, each switched on at one barrier and off at another."""

    def __init__(self, server: TrackingServer, proxy: FaultProxy, disk: Path | None) -> None:
        self.server, self.proxy, self.disk = server, proxy, disk
        self.active: str | None = None

    def start(self, kind: str) -> None:
        """Switch the fault ``kind`` on: ``kill``, ``503``, ``hang`` or ``disk``."""
        self.active = kind
        if kind == "kill":
            self.server.kill()
        elif kind in ("503", "hang"):
            self.proxy.mode = kind
        elif kind == "disk":
            assert self.disk is not None
            _fill(self.disk / "filler")

    def heal(self) -> None:
        """Switch the active fault off (restart the server, forward, free the disk)."""
        kind, self.active = self.active, None
        if kind == "kill":
            self.server.restart()
        elif kind in ("503", "hang"):
            self.proxy.mode = "forward"
        elif kind == "disk":
            assert self.disk is not None
            (self.disk / "filler").unlink(missing_ok=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system is full, to the last byte."""
    with path.open("ab", buffering=0) as file:
        for size in (1 << 16, 1 << 12, 1):
            block = b"\0" * size
            while True:
                try:
                    file.write(block)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break


@dataclass
class Outcome:
    """What the task reported: calls that raised, how the block ended, its exit code."""

    raised: dict[str, str] = field(default_factory=dict)
    exit_error: str | None = None
    returncode: int | None = None
    lines: list[str] = field(default_factory=list)
    stderr: str = ""


def run_task(
    spec: dict[str, Any], workdir: Path, env: dict[str, str], faults: Faults | None = None
) -> Outcome:
    """Run ``task.py`` on ``spec`` in ``workdir``; apply the program's faults at its barriers."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "spec.json").write_text(json.dumps(spec))
    fault = spec["program"]["fault"]
    if faults is not None and fault is not None and fault["start"] < 0:
        faults.start(fault["kind"])  # on before the task starts
    with (workdir / "stderr.txt").open("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(TASK), str(workdir / "spec.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=workdir,
            env=env,
            text=True,
        )
        try:
            outcome = _converse(process, spec["program"], faults)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            if faults is not None and faults.active is not None:
                faults.heal()  # a fault still on when the task exited
        stderr.seek(0)
        outcome.stderr = stderr.read()[-4000:]
    outcome.returncode = process.returncode
    return outcome


def _converse(process: subprocess.Popen[str], program: Program, faults: Faults | None) -> Outcome:
    assert process.stdout is not None
    assert process.stdin is not None
    outcome = Outcome()
    fault = program["fault"]
    started = time.monotonic()
    while line := readline(process.stdout, LINE_TIMEOUT).strip():
        outcome.lines.append(f"{time.monotonic() - started:.1f}s {line}")
        word, _, rest = line.partition(" ")
        if word == "RAISED":
            op_id, _, kind = rest.partition(" ")
            outcome.raised[op_id] = kind
        elif word == "EXIT":
            outcome.exit_error = rest
        elif word == "BARRIER":
            index = int(rest)
            if faults is not None and fault is not None:
                if fault["end"] == index:
                    faults.heal()
                if fault["start"] == index:
                    faults.start(fault["kind"])
            _answer(process.stdin, "go")
    process.wait(LINE_TIMEOUT)
    outcome.lines.append(f"{time.monotonic() - started:.1f}s exited")
    return outcome


def _answer(stdin: IO[str], text: str) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        stdin.write(text + "\n")
        stdin.flush()


def sync(tracking_uri: str, spool_dir: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """``michelangelo-mlflow sync`` for what a task cut short left in ``spool_dir``."""
    command = Path(sys.executable).with_name("michelangelo-mlflow")
    return subprocess.run(
        [str(command), "sync", "--spool", str(spool_dir), "--json"],
        capture_output=True,
        text=True,
        cwd=workdir,
        env={**task_environment(), "MLFLOW_TRACKING_URI": tracking_uri},
        timeout=300,
        check=False,
    )


def task_environment(**extra: str) -> dict[str, str]:
    """This process' environment without MLflow's and the SDK's variables, plus ``extra``."""
    prefixes = ("MLFLOW_", "MICHELANGELO_MLFLOW_", "MA_", "UF_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**env, **extra}


def server_state(tracking_uri: str, experiment: str, ignored_tag: Any) -> list[dict[str, Any]]:
    """Every run of ``experiment``, each as a comparable ``dict``, sorted.

    A run is its name, its parent's name, status, params, tags (without those
    ``ignored_tag(key)`` says to leave out), metric points as a multiset of
    ``(key, step, timestamp, value)``, and artifacts as ``(path, size)``.
    """
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], run_view_type=ViewType.ALL)
    names = {run.info.run_id: run.info.run_name for run in runs}
    state = []
    for run in runs:
        points: Counter[tuple[str, int, int, float]] = Counter()
        for key in run.data.metrics:
            for m in client.get_metric_history(run.info.run_id, key):
                points[(m.key, m.step, m.timestamp, m.value)] += 1
        parent = run.data.tags.get("mlflow.parentRunId")
        state.append(
            {
                "name": run.info.run_name,
                "parent": names.get(parent, parent),
                "status": run.info.status,
                "params": dict(sorted(run.data.params.items())),
                "tags": {k: v for k, v in sorted(run.data.tags.items()) if not ignored_tag(k)},
                "metrics": sorted(points.items()),
                "artifacts": _artifacts(client, run.info.run_id),
            }
        )
    return sorted(state, key=lambda r: (r["parent"] or "", r["name"], r["status"]))


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[Any]:
    found = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found += _artifacts(client, run_id, item.path)
        else:
            found.append((item.path, item.file_size))
    return sorted(found)
