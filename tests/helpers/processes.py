"""Bounded waits on subprocesses: no test blocks forever on a child that hangs."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO


def readline(stream: IO[str], timeout: float) -> str:
    """One line from a subprocess's pipe, waiting at most ``timeout`` seconds.

    Raises:
        TimeoutError: No complete line (nor end of file) arrived in time.
    """
    lines: queue.Queue[str] = queue.Queue(maxsize=1)
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no line from the subprocess within {timeout} s") from None


def end(process: subprocess.Popen[str], timeout: float = 10.0) -> tuple[str, str]:
    """Kill ``process`` if it still runs and return what is left of its stdout and stderr."""
    if process.poll() is None:
        process.kill()
    try:
        out, err = process.communicate(timeout=timeout)
    except (subprocess.TimeoutExpired, ValueError):  # ValueError: a pipe was read already
        return "", ""
    return out or "", err or ""


def sync_cli(
    workdir: Path, tracking_uri: str, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """``michelangelo-mlflow sync`` in ``workdir`` (its default spool), against ``tracking_uri``."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("michelangelo-mlflow")), "sync"],
        cwd=workdir,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
