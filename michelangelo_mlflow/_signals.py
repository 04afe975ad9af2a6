"""SIGTERM and SIGINT while a run is open: the run ends KILLED, then the signal goes on.

Kubernetes stops a pod with SIGTERM and, after the grace period, SIGKILL. While a
tracked run is open in the main thread, a :class:`SignalScope` handles both signals
in the process that opened the run, and its handler does almost nothing:

- In a ``with`` block (``tracking_run``, ``@tracked``) it raises: :class:`Terminated`
  for SIGTERM, ``KeyboardInterrupt`` for SIGINT. The run ends KILLED where the
  block unwinds, with every lock released, and then the signal is handed on to
  the handler installed before (chained, not replaced) or, if there was none, to
  the default action, which terminates the process by SIGTERM exactly as it would
  have without us.
- For a notebook run, which has no block to unwind, it ends the run itself.

Either way, the handler never runs inside the SDK's own critical sections (a record
being stored): a signal arriving there is deferred to the section's end
(:func:`critical`). A signal arriving while the run is closing is handed on after
the close. A forked child (a pool worker, a DataLoader worker) inherits neither the
handler nor the run: the handlers installed before are put back in it at the fork,
so a ``Pool``'s ``terminate()`` kills its workers by the kernel's default action, as
it would without us.

The SDK's own threads (the courier, the checkpointer) are started with both signals
blocked (:func:`start_thread`): the kernel gives a process's signal to a thread that
does not block it, and Python runs handlers only in the main thread, so a signal
taken by a background thread would not interrupt a main thread waiting in a system
call (a lock, a queue), and would never end a child whose main thread waits forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["SignalScope", "Terminated", "critical", "start_thread"]

_HANDLED = (signal.SIGTERM, signal.SIGINT)


class Terminated(BaseException):
    """The process received SIGTERM while a run was open (ends the run as KILLED).

    Attributes:
        signum: The signal received.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        super().__init__(f"received {signal.Signals(signum).name}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.signum,))


_local = threading.local()


class _Critical:
    """The context manager :func:`critical` returns (one, shared: its state is per thread).

    A class rather than a generator: a logging call enters one, and this costs a third
    of a generator-based context manager's 1.7 µs.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        depth = _local.depth - 1
        _local.depth = depth
        if depth == 0:
            deferred = getattr(_local, "deferred", None)
            if deferred is not None:
                _local.deferred = None
                scope, signum = deferred
                scope.act(signum)


_CRITICAL = _Critical()


def critical() -> _Critical:
    """A section no signal handler of this SDK interrupts: it runs at the section's end."""
    return _CRITICAL


def start_thread(thread: threading.Thread) -> None:
    """Start one of the SDK's threads with SIGTERM and SIGINT blocked in it.

    A new thread inherits its creator's signal mask: the signals are blocked around
    ``start()`` and the creator's mask is put back at once (a signal that arrived
    meanwhile is then delivered to the creator).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_open_scopes: list[SignalScope] = []
"""The scopes whose handlers are installed (a forked child puts theirs back)."""


def _after_fork_in_child() -> None:
    """A forked child handles signals as it would have without the SDK."""
    for scope in reversed(list(_open_scopes)):
        scope.restore(in_child=True)
    _open_scopes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SignalScope:
    """Handle SIGTERM (and SIGINT) for one open run, in the process that opened it.

    Args:
        on_signal: What the run does on a signal, outside any critical section:
            raise (a ``with`` block) or end the run (a notebook run).
        sigint: Handle SIGINT too (only when Python's default handler is installed).
    """

    def __init__(self, on_signal: Callable[[int], None], *, sigint: bool = True) -> None:
        self.on_signal = on_signal
        self.pid = os.getpid()
        self.previous: dict[int, Any] = {}
        self.pending: int | None = None
        """A signal that arrived while the run was closing: handed on after the close."""
        self.closing = False
        self._signals = [signal.SIGTERM, signal.SIGINT] if sigint else [signal.SIGTERM]

    def __enter__(self) -> SignalScope:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python cannot install handlers here
        for signum in self._signals:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue  # deliberately ignored: stays so
            if signum == signal.SIGINT and previous is not signal.default_int_handler:
                continue  # someone else's SIGINT handling: theirs alone
            self.previous[signum] = previous
            signal.signal(signum, self._handler)
        if self.previous:
            _open_scopes.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()

    def restore(self, *, in_child: bool = False) -> None:
        """Put the previous handlers back (where ours are still installed).

        Args:
            in_child: Called in a forked child, at the fork (its process id differs).
        """
        if not in_child and os.getpid() != self.pid:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        with contextlib.suppress(ValueError):
            _open_scopes.remove(self)
        for signum, previous in self.previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, previous)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:  # a child forked where its handlers could not be put back
            self.hand_on(signum, frame)
            return
        if getattr(_local, "depth", 0) > 0:
            _local.deferred = (self, signum)  # acted on at the critical section's end
            return
        self.act(signum)

    def act(self, signum: int) -> None:
        """Do what a signal means for the run (outside any critical section)."""
        if self.closing:
            self.pending = signum
            return
        self.on_signal(signum)

    def hand_on(self, signum: int, frame: FrameType | None = None) -> None:
        """Give the signal to what was installed before: a handler, or the default action."""
        previous = self.previous.get(signum, signal.SIG_DFL)
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                signal.signal(signum, previous)
        if previous is signal.default_int_handler:
            raise KeyboardInterrupt
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL or previous is None:
            os.kill(os.getpid(), signum)  # the default action: terminate by the signal
