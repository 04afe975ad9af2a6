"""Put this SDK's process state back to a fresh process's, for users' test suites."""

from __future__ import annotations

from michelangelo_mlflow._state import STATE

__all__ = ["reset"]


def reset() -> None:
    """Forget everything this SDK remembers in the process, as if it had just started.

    Preflight reports and the version warnings already given, the server versions
    and experiment ids it looked up: all are forgotten, so the next tracked run checks
    the server again. Runs still open (and their spools) are left alone: they belong
    to code that is still running.

    Example:
        >>> from michelangelo_mlflow.testing import reset
        >>> reset()
    """
    STATE.forget()
