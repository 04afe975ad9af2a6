"""One preflight for the processes of a host that start at once against one server.

A pipeline's fan-out starts dozens of tasks on one node at the same moment (a Ray
job's workers, a sweep's trials), each its own process with its own preflight: three
requests each, some 12 ms of CPU between the task and the server, all at the moment the
server is busiest. :func:`check_once` lets one process check and the others use its
verdict:

- the verdict of a server is a file of the user's host directory (``_host.py``),
  ``preflight-<name>.json``, where ``<name>`` is a keyed digest (HMAC-SHA256, with a
  random key kept in the same private directory) of the tracking URI, the
  credentials, the TLS settings and the MLflow and SDK versions: a process with
  another password, CA bundle or client checks for itself, and the name tells
  nothing about the credentials;
- a *passing* verdict is used for ``ttl`` seconds after its check
  (``MICHELANGELO_MLFLOW_PREFLIGHT_HOST_TTL``; 0 switches sharing off);
- one process at a time checks (``flock`` on ``preflight-<name>.lock``); the others
  wait for it, up to the preflight's deadline, and use its verdict if it passed.
  If it failed, each checks for itself, at once, as without sharing: a failure is
  never taken from another process, so every failed run has its own typed error.

Anything that goes wrong with the files (no directory, a full disk, a torn or foreign
file) means no sharing, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from michelangelo_mlflow._host import host_directory, try_lock, unlock

__all__ = ["check_once"]

T = TypeVar("T")

FORMAT = 1
"""The verdict file's format; a file of another format is not read."""

_POLL = (0.01, 0.05)
"""Seconds between tries for the lock of a check in progress: a uniform draw."""

_KEY_BYTES = 32


def check_once(
    key: Sequence[str],
    check: Callable[[], T],
    *,
    passed: Callable[[T], dict[str, Any] | None],
    restore: Callable[[dict[str, Any]], T | None],
    ttl: float,
    wait: float,
    not_before: float = 0.0,
) -> T:
    """The verdict of ``check``, shared with this user's other processes on the host.

    Args:
        key: What the verdict depends on (secrets included: only a digest is kept).
        check: Runs the check.
        passed: A passing result as a JSON-ready dict to share; ``None`` for a result
            not to share (a failure).
        restore: The result from a shared dict (it may check what is cheap to check
            again); ``None`` for a dict it cannot read (then this process checks).
        ttl: Seconds a passing verdict is used after its check; 0 shares nothing.
        wait: Seconds to wait for another process's check in progress.
        not_before: Ignore verdicts checked before this time (``time.time()``).

    Returns:
        A shared passing verdict, or this process's own check's.
    """
    directory = host_directory() if ttl > 0 else None
    name = _name(directory, key) if directory is not None else None
    if directory is None or name is None:
        return check()
    verdict = directory / f"preflight-{name}.json"
    arrived = time.time()
    if (found := _fresh(verdict, ttl, not_before, restore)) is not None:
        return found
    lock, deadline = directory / f"preflight-{name}.lock", time.monotonic() + wait
    while (fd := try_lock(lock)) is None:  # another process checks: wait for its verdict
        if (found := _fresh(verdict, ttl, not_before, restore)) is not None:
            return found
        if (left := deadline - time.monotonic()) <= 0:
            break  # a check that hangs: this process checks for itself
        time.sleep(min(left, random.uniform(*_POLL)))
    fd = None if fd == -1 else fd  # -1: the lock cannot be opened: check alone
    try:
        if (found := _fresh(verdict, ttl, not_before, restore)) is not None:
            return found  # checked while this process waited
        if fd is None or not _failed_since(verdict, arrived):
            result = check()
            _write(verdict, {"format": FORMAT, "checked": time.time(), "passed": passed(result)})
            return result
    finally:
        if fd is not None:
            unlock(fd)
    return check()  # it failed while this process waited: each checks for itself, at once


def _name(directory: Path, key: Sequence[str]) -> str | None:
    secret = _secret(directory / "preflight.key")
    if secret is None:
        return None
    digest = hmac.new(secret, digestmod=hashlib.sha256)
    for part in key:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:32]


def _secret(path: Path) -> bytes | None:
    """The user's random key: made once, whole (linked in place), by whoever comes first."""
    for _ in range(2):
        try:
            secret = path.read_bytes()
        except FileNotFoundError:
            _make_secret(path)
            continue
        except OSError:
            return None
        return secret if len(secret) == _KEY_BYTES else None
    return None


def _make_secret(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".preflight-key-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(os.urandom(_KEY_BYTES))
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temporary, path)
        finally:
            os.unlink(temporary)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as file:
            verdict = json.loads(file.read(1 << 20))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(verdict, dict)
        or verdict.get("format") != FORMAT
        or not isinstance(verdict.get("checked"), float)
    ):
        return None
    return verdict


def _fresh(
    path: Path, ttl: float, not_before: float, restore: Callable[[dict[str, Any]], T | None]
) -> T | None:
    """The shared passing result, if one was checked within ``ttl`` and after ``not_before``."""
    verdict = _read(path)
    if verdict is None or not isinstance(passed := verdict.get("passed"), dict):
        return None
    checked: float = verdict["checked"]
    if not not_before <= checked <= time.time() <= checked + ttl:
        return None
    return restore(passed)


def _failed_since(path: Path, since: float) -> bool:
    verdict = _read(path)
    return verdict is not None and verdict.get("passed") is None and verdict["checked"] >= since


def _write(path: Path, verdict: dict[str, Any]) -> None:
    """Replace the verdict whole (a reader sees the old one or the new one)."""
    with contextlib.suppress(OSError, TypeError, ValueError):
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".preflight-")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(verdict, file)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
