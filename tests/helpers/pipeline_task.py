"""A task process for the concurrency and SIGTERM tests (run as a subprocess).

Usage: python -m tests.helpers.pipeline_task MODE BARRIER_DIR
  parent  wait at the barrier, then start a tracked run (the environment asks for a
          pipeline parent run) and print "run <run_id> parent <parent_id>"
  sleep   start a tracked run, print "run <run_id>", then sleep until killed
  chain   like sleep, with an earlier SIGTERM handler that writes BARRIER_DIR/chained
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import mlflow

import michelangelo_mlflow as mm

BARRIER_TIMEOUT = 120.0


def wait_at_barrier(barrier: Path) -> None:
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            sys.exit(f"no go at {barrier} within {BARRIER_TIMEOUT} s")
        time.sleep(0.01)


def main(mode: str, barrier: Path) -> None:
    if mode == "parent":
        wait_at_barrier(barrier)
        with mm.tracking_run("pipelines", run_name="task") as run:
            parent = run.data.tags.get("mlflow.parentRunId", "")
            print(f"run {run.info.run_id} parent {parent}", flush=True)
        return
    if mode == "chain":

        def earlier(signum: int, frame: FrameType | None) -> None:
            (barrier / "chained").write_text(str(signum))
            sys.exit(143)

        signal.signal(signal.SIGTERM, earlier)
    with mm.tracking_run("pipelines", run_name=f"sleeper-{mode}") as run:
        mlflow.log_metric("loss", 1.0, step=0)
        print(f"run {run.info.run_id}", flush=True)
        time.sleep(120)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
