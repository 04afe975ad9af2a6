"""A run's end waits while the server makes progress: a grace past the last, up to a cap."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from michelangelo_mlflow._logging import closing


def waiter(monkeypatch: pytest.MonkeyPatch, *, busy: bool = False) -> tuple[Any, Any, list[float]]:
    """A waiter of grace 3 s over one pending spool, on a clock the test moves."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # what closing.py reads
    courier = SimpleNamespace(delivered=0)
    pacer = SimpleNamespace(busy_recently=lambda within: busy)
    route = SimpleNamespace(tracking_uri="http://127.0.0.1:5000")
    spool = SimpleNamespace(
        courier=courier, pacer=lambda: pacer, pending_bytes=lambda: 0, route=route
    )
    return closing._Waiter([cast("Any", spool)], grace=3.0), courier, clock


def look(found: Any, clock: list[float], at: float) -> float:
    clock[0] = at
    found._extend(at, found.family)
    return float(found.deadline)


def test_the_deadline_is_a_grace_past_the_last_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    found, courier, clock = waiter(monkeypatch)
    assert found.deadline == 103.0
    courier.delivered = 5
    assert look(found, clock, 102.0) == 105.0  # records went: a grace from now
    assert look(found, clock, 104.0) == 105.0  # nothing since: the deadline stays
    courier.delivered = 6
    assert look(found, clock, 104.5) == 107.5


def test_a_busy_server_extends_the_deadline_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    found, _, clock = waiter(monkeypatch, busy=True)
    assert look(found, clock, 102.0) == 105.0
    cap = 100.0 + 3.0 * closing.PROGRESS_CAP
    assert look(found, clock, cap - 1.0) == cap  # never past the cap
