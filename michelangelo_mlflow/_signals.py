"""SIGTERM while a run is open: mark it KILLED, then exit as the process would have.

Kubernetes stops a pod with SIGTERM and, after the grace period, SIGKILL. While a
tracked run is open in the main thread, :func:`on_sigterm` installs a handler that
ends the run as KILLED and then hands the signal on: to the handler that was
installed before (chained, not replaced), or, if there was none, back to the default
action, which terminates the process with SIGTERM exactly as it would have without
us. The previous handler is restored when the run ends.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Terminated", "on_sigterm"]


class Terminated(BaseException):
    """The process received SIGTERM while a run was open (ends the run as KILLED)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")


@contextmanager
def on_sigterm(close: Callable[[BaseException], None]) -> Iterator[None]:
    """Call ``close(Terminated())`` on SIGTERM while the block runs, then chain.

    Outside the main thread (where Python cannot install signal handlers), or when
    SIGTERM is ignored, this does nothing.

    Args:
        close: Ends the run; called at most once, from the signal handler.

    Yields:
        Nothing.
    """
    previous: Any = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield  # no handler possible here, or SIGTERM is deliberately ignored
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)
        close(Terminated(signum))
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL or previous is None:
            os.kill(os.getpid(), signum)  # the default action: terminate by SIGTERM

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)
