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

Of the processes waiting for slots of one share, one at a time looks for a free slot
often (the holder of that share's *waiting room*, ``<server>-room-<share>.lock``);
the others look for the room, seldom, and sleep in between. Dozens of tasks waiting
on one node thus cost its CPU next to nothing (64 tasks polling every slot every few
milliseconds took a tenth of a 2-core node from the tracking server beside them).

Waiting for a slot is bounded by the request's own timeout, after which the request
goes anyway: a server that hangs ties slots up until the holders' timeouts, and the
waiters then find out for themselves. A directory that cannot be written or trusted
(``_host.py``) means no gate (each process sends as if alone), never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

from michelangelo_mlflow._host import host_directory, try_lock, unlock

__all__ = ["DEFAULT_SENDERS", "SendGate"]

DEFAULT_SENDERS = 8
"""Requests in flight to one server from one host at most, by default."""

_POLL = (0.01, 0.05)
"""Seconds between tries for a free slot, in the waiting room: a uniform draw."""

_QUEUE = (0.1, 0.3)
"""Seconds between tries for the waiting room: a uniform draw, so waiters do not march."""


class SendGate:
    """The slots of one server on this host.

    Args:
        server: The tracking URI without credentials.
        senders: Slots (requests in flight from this host at most).
    """

    def __init__(self, server: str, senders: int = DEFAULT_SENDERS) -> None:
        self.senders = senders
        name = hashlib.sha256(server.encode()).hexdigest()[:16]
        self._paths: list[Path] = []  # no directory to share: no gate
        self._rooms: list[Path] = []
        if (directory := host_directory()) is not None:
            self._paths = [directory / f"{name}-{i}.lock" for i in range(senders)]
            self._rooms = [directory / f"{name}-room-{i + 1}.lock" for i in range(senders)]

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
        fd = self._acquire(share, time.monotonic() + wait) if self._paths else None
        try:
            yield fd is not None
        finally:
            if fd is not None:
                unlock(fd)

    def _acquire(self, share: int, deadline: float) -> int | None:
        room: int | None = None
        try:
            fd = _first_free(self._paths[:share])
            while fd is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if room is None:
                    room = try_lock(self._rooms[share - 1])  # -1: no room to be had: poll
                    if room is None:  # another waiter looks for slots: wait for its room
                        time.sleep(min(left, random.uniform(*_QUEUE)))
                        continue
                else:
                    time.sleep(min(left, random.uniform(*_POLL)))
                fd = _first_free(self._paths[:share])
            return fd if fd >= 0 else None  # -1: nowhere to keep the slots: no gate
        finally:
            if room is not None and room >= 0:
                unlock(room)


def _first_free(paths: list[Path]) -> int | None:
    """A held slot among ``paths`` (tried in random order), ``None``, or -1 for no gate."""
    for path in random.sample(paths, len(paths)):
        fd = try_lock(path)
        if fd is not None:
            return fd
    return None
