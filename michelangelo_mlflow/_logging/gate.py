"""A few requests in flight to one tracking server from all the processes of one host.

A pipeline's fan-out starts many tasks on one node at once (a Ray job's workers, a
sweep's trials), each with its own courier. A server takes records fastest from a few
requests at a time: past its database pool, requests queue, time out in the server
(MLflow answers an exhausted pool with a 400 after 30 s) and are sent again, so the
more sent at once, the less gets through. The gate keeps at most ``senders`` requests
in flight to a server from this host and user, whatever process sends them: slot
``i`` is the ``flock`` of ``<tmp>/michelangelo-mlflow-<uid>/<server>-<i>.lock``, held
only while one request is in flight and let go explicitly after it (so a forked child
that inherited the descriptor never holds it), and given back by the kernel if the
process dies.

A process may use only the first ``limit`` slots (its share, which its pacer adapts:
``pacing.py``). The processes of a host share the lowest slots, so the requests in
flight from the host are at most the largest share of any of them, and a process that
finds the server slow shrinks only its own.

Waiting for a slot is bounded by the request's own timeout, after which the request
goes anyway: a server that hangs ties slots up until the holders' timeouts, and the
waiters then find out for themselves. A directory that cannot be written means no
gate (each process sends as if alone), never an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DEFAULT_SENDERS", "SendGate"]

DEFAULT_SENDERS = 8
"""Requests in flight to one server from one host at most, by default."""

_POLL = (0.01, 0.05)
"""Seconds between tries for a free slot: a uniform draw, so waiters do not march."""


class SendGate:
    """The slots of one server on this host.

    Args:
        server: The tracking URI without credentials.
        senders: Slots (requests in flight from this host at most).
    """

    def __init__(self, server: str, senders: int = DEFAULT_SENDERS) -> None:
        self.senders = senders
        name = hashlib.sha256(server.encode()).hexdigest()[:16]
        self._paths = [_directory() / f"{name}-{i}.lock" for i in range(senders)]

    @contextlib.contextmanager
    def slot(self, wait: float, limit: int | None = None) -> Iterator[bool]:
        """Hold a slot while the body sends one request.

        Args:
            wait: Seconds to wait for a free slot before going without one.
            limit: Use only the first ``limit`` slots (from 1 to ``senders``; all of
                them by default).

        Yields:
            Whether a slot is held.
        """
        share = self.senders if limit is None else max(1, min(self.senders, limit))
        fd = self._acquire(self._paths[:share], time.monotonic() + wait)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _acquire(self, paths: list[Path], deadline: float) -> int | None:
        while True:
            for path in random.sample(paths, len(paths)):
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                except OSError:
                    return None  # nowhere to keep the slots: no gate
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                return fd
            if time.monotonic() >= deadline:
                return None
            time.sleep(random.uniform(*_POLL))


def _directory() -> Path:
    path = Path(tempfile.gettempdir()) / f"michelangelo-mlflow-{os.getuid()}"
    with contextlib.suppress(OSError):
        path.mkdir(mode=0o700, exist_ok=True)
    return path
