"""The HTTP budget: MLflow's retry variables while a run is open.

With the spool on, a synchronous MLflow call should give up after about
``spool_grace`` seconds (the spool keeps what it could not send); the unset ``http_*``
knobs are derived from the grace here. With the spool off, MLflow's defaults stand.
"""

from __future__ import annotations

import math

BACKOFF_MAX = 120.0
"""urllib3's ``Retry.DEFAULT_BACKOFF_MAX``: no single backoff sleep is longer (MLflow keeps it)."""


def http_budget(
    *,
    spool_on: bool,
    spool_grace: float,
    max_retries: int | None,
    backoff_factor: int | None,
    timeout: float | None,
) -> dict[str, str]:
    """MLflow's HTTP retry variables to set while a run is open; only those to set.

    See :meth:`~michelangelo_mlflow.Settings.http_budget` for the rule.

    Args:
        spool_on: Whether the spool is on (derive the unset knobs).
        spool_grace: Seconds a run's end waits for the server.
        max_retries: ``http_max_retries``, or ``None`` when unset.
        backoff_factor: ``http_backoff_factor``, or ``None`` when unset.
        timeout: ``http_timeout``, or ``None`` when unset.

    Returns:
        ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR`` and ``..._TIMEOUT``,
        those that should be set.
    """
    budget: dict[str, str] = {}
    if max_retries is not None:
        budget["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)
    elif spool_on:
        budget["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries_within(spool_grace))
    if backoff_factor is not None:
        budget["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(backoff_factor)
    elif spool_on:
        budget["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    if timeout is not None:
        budget["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(math.ceil(timeout))
    elif spool_on:
        budget["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(min(120.0, max(10.0, spool_grace))))
    return budget


def backoff_total(retries: int) -> float:
    """Seconds urllib3 sleeps over ``retries`` retries with backoff factor 1.

    0 before the first retry, then 2, 4, 8 … seconds, each at most 120: ``2**n - 2``
    up to 7 retries (126 s), 486 s for 10.
    """
    return sum(min(BACKOFF_MAX, 2.0 ** (k - 1)) for k in range(2, retries + 1))


def retries_within(grace: float) -> int:
    """The fewest retries (at most 10) whose backoff sleeps add up to ``grace``."""
    return next((n for n in range(11) if backoff_total(n) >= grace), 10)
