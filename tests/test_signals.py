"""Signals at random moments of a tight logging loop: no hang, KILLED, nothing lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer

ROOT = Path(__file__).resolve().parent.parent
ITERATIONS = int(os.environ.get("MM_SIGNAL_ITERATIONS", "200"))
"""200 on the whole suite's Python; fewer on the others (see noxfile.py)."""


def test_sigterm_and_sigint_at_random_moments(
    tracking_server: TrackingServer, client: MlflowClient, tmp_path: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server.url, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.signal_loop", str(ITERATIONS), "14"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,  # a deadlock in a handler fails here
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(runs) == ITERATIONS
    for run in runs:
        stored = client.get_run(run["run_id"])
        assert stored.info.status == "KILLED", run
        steps = sorted(m.step for m in client.get_metric_history(run["run_id"], "loss"))
        # Every call that returned is on the server; the interrupted call's record may be
        # too (it was stored before the signal was acted on, at the end of the call).
        assert steps[: run["returned"]] == list(range(run["returned"])), run
        assert len(steps) in (run["returned"], run["returned"] + 1), run
    assert {run["signal"] for run in runs} == {2, 15}
    assert not (tmp_path / ".michelangelo-mlflow-spool").exists()


def test_the_sdks_threads_leave_sigterm_and_sigint_to_the_main_thread(
    settings: mm.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python runs handlers only in the main thread: a signal the kernel gave a
    # background thread would not interrupt a main thread waiting in a system call.
    monkeypatch.chdir(tmp_path)
    with mm.tracking_run("signals-thread-mask", settings=settings):
        mlflow.log_metric("loss", 1.0)
        ours = [t for t in threading.enumerate() if t.name.startswith("michelangelo-mlflow-")]
        assert "michelangelo-mlflow-courier" in {t.name for t in ours}
        for thread in ours:
            status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
            found = re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.MULTILINE)
            assert found is not None, status
            blocked = int(found.group(1), 16)
            for signum in (signal.SIGTERM, signal.SIGINT):
                assert blocked & (1 << (signum - 1)), (thread.name, signum, hex(blocked))
    main = Path(f"/proc/self/task/{threading.main_thread().native_id}/status").read_text()
    assert re.search(r"^SigBlk:\s*0+$", main, re.MULTILINE), main  # the main thread's mask is left
