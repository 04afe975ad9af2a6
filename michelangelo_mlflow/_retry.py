"""The one retry helper: jittered exponential backoff, bounded by attempts and a deadline.

Every loop in this SDK that tries a call again (the preflight's requests, ``sync``
waiting for a server to come back) goes through :func:`retry_call`, a small
keyword-only wrapper over tenacity in the way stamina wraps it: the stop condition
combines a number of attempts with a shared deadline, the last exception is re-raised
as is (never ``tenacity.RetryError``), and each attempt's timeout is clipped to the
time left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

__all__ = ["Budget", "retry_call"]

T = TypeVar("T")

MIN_ATTEMPT_SECONDS = 0.1
"""An attempt is not started with less time than this left in the budget."""

logger = logging.getLogger("michelangelo_mlflow.retry")


class Budget:
    """A monotonic deadline shared by several calls (the checks of one preflight).

    Args:
        seconds: How long from now.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.deadline - time.monotonic())


class _OutOfBudget(tenacity.stop.stop_base):
    """Stop when the next attempt would start with less than the minimum left."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        upcoming = retry_state.upcoming_sleep or 0.0
        return self.budget.remaining() - upcoming < MIN_ATTEMPT_SECONDS


def retry_call(
    fn: Callable[[float], T],
    *,
    attempts: int,
    budget: Budget,
    timeout: float,
    on: tuple[type[BaseException], ...],
    when: Callable[[BaseException], bool] | None = None,
    initial_wait: float = 0.1,
    max_wait: float = 1.0,
) -> T:
    """Call ``fn(timeout)`` with jittered exponential backoff, bounded twice.

    Stops after ``attempts`` calls, or when the next attempt would start with less than
    0.1 s of ``budget`` left, whichever comes first; each call's timeout is clipped to
    the budget left. The last exception is re-raised as is (never ``RetryError``).

    Args:
        fn: Called with the timeout, in seconds, its request must use.
        attempts: Most calls to make.
        budget: The deadline shared with other calls.
        timeout: The largest timeout of one call.
        on: Exception types that are retried; others propagate at once.
        when: Retry only the exceptions of those types for which this returns true.
        initial_wait: Backoff before the second attempt, in seconds (then doubled).
        max_wait: Largest backoff, in seconds.

    Returns:
        What ``fn`` returned.

    Example:
        >>> retry_call(lambda timeout: 42, attempts=3, budget=Budget(1), timeout=1, on=(OSError,))
        42
    """

    def log_retry(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome.exception() if state.outcome else None
        logger.debug(
            "attempt %d failed (%s), retrying in %.2f s",
            state.attempt_number,
            outcome,
            state.upcoming_sleep,
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | _OutOfBudget(budget),
        wait=tenacity.wait_exponential(multiplier=initial_wait, max=max_wait)
        + tenacity.wait_random(0, initial_wait),
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, on) and (when is None or when(exc))
        ),
        before_sleep=log_retry,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            return fn(max(min(timeout, budget.remaining()), MIN_ATTEMPT_SECONDS))
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
