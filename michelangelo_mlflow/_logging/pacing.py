"""How fast one tracking server takes records: timeouts, batch sizes and backoff.

One :class:`Pacer` per server and process, shared by every run spool sending there.
It keeps one request in flight and adapts to what the server answers:

- **Timeouts** follow the latency measured (a smoothed round trip plus four times
  its deviation, as TCP does), between the route's first timeout (10 s) and MLflow's
  own 120 s. A request that timed out while ``/health`` answers was queued behind
  other work: the next requests get MLflow's full 120 s at once, so that work the
  server is doing is never abandoned and sent again, and the records of the one that
  timed out are not sent again before the backoff.
- **Batch size** stays at MLflow's 1,000 records while the server answers, busy or
  not: a server does less work for the same records in fewer, larger requests (each
  request has its own transaction), so a busy server is given time (backoff), not
  smaller batches. After an outage it starts small (slow start) and doubles on each
  answer, so that many processes coming back together do not send their whole
  backlogs at once.
- **Backoff** is exponential with full jitter (a uniform draw between zero and the
  ceiling), honours ``Retry-After``, and is capped lower while a run is closing.

- **Requests in flight from the host** adapt, additive increase and multiplicative
  decrease (AIMD), as TCP's window does on loss. Each process has a share of the
  host's gate (``gate.py``), :attr:`Pacer.share` of its ``senders`` slots: it starts
  at all of them, is halved (at most once per round trip) when the server says it is
  busy (429, 503, the database error in a 400, or a request that outlasted its
  timeout while ``/health`` answered: latency past the timeout), drops to one slot
  in an outage, and grows back by one slot per share's worth of answers. The
  processes of a host share the lowest slots, so a process that meets a busy server
  holds back only itself, and the host has as many requests in flight as its least
  troubled process allows. Latency below the timeout does not cut the share: on a
  node whose CPU the tasks share, it climbs with the tasks' own load, and a share
  halved when a full batch took twice the fastest of the last 16 made 32 tasks on
  PostgreSQL 1.43x slower than ``log_batch`` in one run (1.09x to 1.23x in six paired
  runs without it).

A request waits for a slot of its share of the host's gate first (``gate.py``: a few
requests in flight to a server from all the processes of a host). While a request
waits for a slot or is in flight, the server counts as working (a run's end waits for
it, see ``closing.py``): others' requests are being answered, and the request has its
own timeout, after which ``/health`` tells a busy server from a gone one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from michelangelo_mlflow._logging.delivery import MAX_ITEMS, Busy, Outage, Route, health
from michelangelo_mlflow._logging.gate import SendGate

__all__ = ["SLOW_START", "Pacer"]

log = logging.getLogger("michelangelo_mlflow.spool")

SLOW_START = 100
"""Records of the first batch after an outage."""

MAX_TIMEOUT = 120.0
"""MLflow's own request timeout: a request never gets longer."""

_HEALTH_TIMEOUT = 2.0
"""Seconds ``/health`` has to answer after a timed-out request for the server to count as up."""

_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 8.0
_BACKOFF_MAX_CLOSING = 1.0


class Pacer:
    """The pacing of one server (thread-safe).

    Args:
        route: The server.

    Attributes:
        window: Records a batch may hold now.
        timeout: Seconds the next request may take.
        retry_at: ``time.monotonic()`` before which nothing is sent.
        outage: Why the server did not answer, while it does not.
        answered_at: When the server last answered, or said it was busy working.
        in_flight: ``time.monotonic()`` when the request in flight was sent, if any.
        hurry: Set while a run is closing: back off at most a second.
        share: Slots of the host's gate this process may use (from 1 to the route's
            ``senders``; AIMD on "busy").
    """

    def __init__(self, route: Route) -> None:
        self.route = route
        self.window = MAX_ITEMS
        self.timeout = max(10.0, route.timeout)
        self.retry_at = 0.0
        self.outage: str | None = None
        self.answered_at = time.monotonic()
        self.hurry = 0
        self.in_flight: float | None = None
        self.gate = SendGate(route.tracking_uri, route.senders)
        self.share = float(route.senders)
        self._cut_at = 0.0
        self._floor = self.timeout
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._failures = 0
        self._told_when = False  # the wait drawn is the server's Retry-After
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """Whether a request may be sent now."""
        return time.monotonic() >= self.retry_at

    def send(self, call: Callable[[float], None]) -> None:
        """Make one request, ``call(timeout)``, and learn from its answer.

        A request that timed out counts as the server working only when its ``/health``
        answers at once: a server that hangs altogether is an outage.

        Args:
            call: Makes the request with the timeout given.

        Raises:
            Outage: No server answered (re-raised after backing off).
            Busy: It answered "not now" (re-raised after backing off).
        """
        self.in_flight = time.monotonic()  # from the wait for a slot: others are sending
        try:
            with self.gate.slot(wait=self.timeout, limit=self.slots()):
                start = time.monotonic()
                call(self.timeout)
        except (Outage, Busy) as exc:
            if isinstance(exc, Busy) and exc.timed_out:
                exc.working = self._healthy()
            self.failed(exc)
            raise
        finally:
            self.in_flight = None
        self._answered(time.monotonic() - start)

    def slots(self) -> int:
        """Slots of the host's gate this process may use now."""
        return int(self.share)

    def _healthy(self) -> bool:
        try:
            health(self.route, _HEALTH_TIMEOUT)
        except Outage:
            return False
        return True

    def _answered(self, latency: float) -> None:
        with self._lock:
            self.share = min(float(self.route.senders), self.share + 1 / self.share)
            if self._srtt is None:
                self._srtt, self._rttvar = latency, latency / 2
            else:
                self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - latency)
                self._srtt = 0.875 * self._srtt + 0.125 * latency
            self.timeout = min(MAX_TIMEOUT, max(self._floor, self._srtt + 4 * self._rttvar))
            self.window = min(MAX_ITEMS, self.window * 2)
            self._failures = 0
            self.retry_at = 0.0
            self.answered_at = time.monotonic()
            recovered, self.outage = self.outage, None
        if recovered is not None:
            log.warning(
                "the MLflow tracking server at %s answers again; sending the records kept "
                "meanwhile", self.route.tracking_uri,
            )  # fmt: skip

    def failed(self, exc: Outage | Busy) -> None:
        """Back off after a failed request."""
        with self._lock:
            self._failures += 1
            ceiling = _BACKOFF_MAX_CLOSING if self.hurry else _BACKOFF_MAX
            delay = random.uniform(0, min(ceiling, _BACKOFF_FIRST * 2 ** (self._failures - 1)))
            first = False
            self._told_when = False
            if isinstance(exc, Busy):
                self._cut()
                if exc.retry_after is not None:
                    self._told_when = exc.retry_after > delay
                    delay = max(delay, exc.retry_after)
                if exc.timed_out:
                    # Queued behind others' work (working) or not answering at all: either
                    # way a shorter wait would only abandon the next request too.
                    longer = MAX_TIMEOUT if exc.working else self.timeout * 2
                    self.timeout = min(MAX_TIMEOUT, longer)
                if exc.working:
                    self.answered_at = time.monotonic()
            else:
                first = self.outage is None
                self.outage = str(exc)
                self.window = SLOW_START
                self.share = 1.0
            self.retry_at = time.monotonic() + delay
        if first:
            log.warning(
                "the MLflow tracking server at %s is not taking records (%s); they are kept "
                "in the spool and sent when it answers again", self.route.tracking_uri, exc,
            )  # fmt: skip

    def _cut(self) -> None:
        """Halve the share, at most once per round trip (under the lock)."""
        now = time.monotonic()
        if now - self._cut_at >= (self._srtt or 0.0):
            self.share = max(1.0, self.share / 2)
            self._cut_at = now

    def hurry_up(self) -> None:
        """A run is closing: back off at most a second, from now on and for the wait drawn.

        A ``Retry-After`` the server gave is still honoured.
        """
        with self._lock:
            self.hurry += 1
            soonest = time.monotonic() + _BACKOFF_MAX_CLOSING
            if self.retry_at > soonest and not self._told_when:
                self.retry_at = soonest

    def calm_down(self) -> None:
        """A closing run is done waiting."""
        with self._lock:
            self.hurry -= 1

    def busy_recently(self, within: float) -> bool:
        """Whether the server is working: a request in flight, or any answer within ``within`` s."""
        if self.outage is not None:
            return False
        return self.in_flight is not None or time.monotonic() - self.answered_at < within
