"""Bounded waits on subprocesses: no test blocks forever on a child that hangs."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
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


def start_together(
    command: Sequence[str],
    count: int,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stagger: float = 0.0,
    timeout: float = 300.0,
) -> list[subprocess.Popen[str]]:
    """Start ``count`` processes of ``command``, wait until each printed "ready", say "go".

    Each process prints ``ready`` once set up and then reads one line of its stdin:
    "go" reaches them all at once (``stagger`` seconds apart), as a pipeline's
    fan-out starts its tasks. On any failure every process is killed.
    """
    started = [
        subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for process in started:
            assert process.stdout is not None
            line = readline(process.stdout, timeout).strip()
            assert line == "ready", end(process)[1][-3000:]
        for process in started:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
            time.sleep(stagger)
    except BaseException:
        for process in started:
            end(process)
        raise
    return started
