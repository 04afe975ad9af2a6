"""The directory this user's processes on one host share: ``<tmp>/michelangelo-mlflow-<uid>``.

It holds the send gate's lock files (``_logging/gate.py``) and the preflight verdicts
shared between processes (``_preflight_host.py``). Only a directory that this user
owns and nobody else can write is used: what is read from it is trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["host_directory", "try_lock", "unlock"]


def host_directory() -> Path | None:
    """The user's shared directory, made if missing; ``None`` when it cannot be trusted.

    Returns:
        The directory, or ``None`` when it cannot be made, is not a directory, or is
        owned or writable by another user (then nothing is shared through it).
    """
    path = Path(tempfile.gettempdir()) / f"michelangelo-mlflow-{os.getuid()}"
    with contextlib.suppress(OSError):
        path.mkdir(mode=0o700, exist_ok=True)
    try:
        status = path.lstat()
    except OSError:
        return None
    private = status.st_uid == os.getuid() and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return path if stat.S_ISDIR(status.st_mode) and private else None


def try_lock(path: Path) -> int | None:
    """``path`` opened and ``flock``-ed: its descriptor; ``None`` when taken, -1 if unopenable."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    """Let go explicitly: a forked child's inherited copy then holds nothing."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
