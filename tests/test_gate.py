"""The host's gate: at most ``senders`` requests in flight to one server, from any process.

Each process uses a share of the slots that its pacer halves on "busy" (AIMD).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from michelangelo_mlflow._logging import pacing
from michelangelo_mlflow._logging.delivery import Busy, Outage, Route
from michelangelo_mlflow._logging.gate import SendGate
from michelangelo_mlflow._logging.pacing import SLOW_START, Pacer

HOLDER = """
import sys, time
from michelangelo_mlflow._logging.gate import SendGate
with SendGate(sys.argv[1], 1).slot(wait=5.0) as held:
    print("held" if held else "none", flush=True)
    time.sleep(600)
"""


def server() -> str:
    return f"http://gate-test-{uuid.uuid4().hex}:5000"  # a gate of this test's own


def test_no_more_than_senders_requests_are_in_flight_at_once() -> None:
    gate = SendGate(server(), 3)
    lock = threading.Lock()
    now = peak = 0
    held: list[bool] = []

    def send() -> None:
        nonlocal now, peak
        with gate.slot(wait=60.0) as got:
            with lock:
                held.append(got)
                now += 1
                peak = max(peak, now)
            time.sleep(0.05)
            with lock:
                now -= 1

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert held == [True] * 12  # everyone got a slot in turn
    assert peak == 3


def test_a_request_goes_without_a_slot_once_its_wait_is_over() -> None:
    url = server()
    gate = SendGate(url, 1)
    with gate.slot(wait=1.0) as first:
        with SendGate(url, 1).slot(wait=0.1) as second:
            assert first is True
            assert second is False
    with gate.slot(wait=1.0) as again:  # given back after the body
        assert again is True


def test_a_directory_another_user_could_write_means_no_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"michelangelo-mlflow-{os.getuid()}"
    url = server()
    with SendGate(url, 1).slot(wait=1.0) as held:
        assert held is True
        assert list(shared.glob("*.lock"))  # the slots live there
    shared.chmod(0o777)  # anyone could hold (or plant) the slots: not used
    with SendGate(url, 1).slot(wait=5.0) as first, SendGate(url, 1).slot(wait=5.0) as second:
        assert (first, second) == (False, False)  # at once, each sends as if alone
    shared.chmod(0o700)
    with SendGate(url, 1).slot(wait=1.0) as again:
        assert again is True


def test_a_killed_processs_slot_is_given_back() -> None:
    url = server()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with SendGate(url, 1).slot(wait=0.1) as got:
            assert got is False  # the other process holds the only slot
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with SendGate(url, 1).slot(wait=5.0) as got:
            assert got is True
    finally:
        holder.kill()
        holder.wait(10)


def test_a_forked_child_never_holds_its_parents_slot() -> None:
    url = server()
    gate = SendGate(url, 1)
    with gate.slot(wait=1.0) as got:
        assert got is True
        pid = os.fork()
        if pid == 0:  # the child keeps the inherited descriptor open and sleeps
            time.sleep(5)
            os._exit(0)
    try:
        with SendGate(url, 1).slot(wait=1.0) as again:
            assert again is True  # let go explicitly: the child's copy does not hold it
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_share_uses_only_the_lowest_slots() -> None:
    url = server()
    gate = SendGate(url, 8)
    with gate.slot(wait=1.0, limit=2) as first, gate.slot(wait=1.0, limit=2) as second:
        assert (first, second) == (True, True)
        with gate.slot(wait=0.1, limit=2) as third:
            assert third is False  # its share is taken, though 6 slots are free
        with gate.slot(wait=0.1, limit=8) as wider:
            assert wider is True  # a larger share reaches the free slots
        with gate.slot(wait=0.1, limit=0) as clamped:
            assert clamped is False  # a share is at least the first slot (held here)


def test_one_waiter_at_a_time_looks_for_a_free_slot() -> None:
    url = server()
    gate = SendGate(url, 2)
    got: list[bool] = []

    def wait_for_a_slot() -> None:
        with gate.slot(wait=30.0) as held:
            got.append(held)

    with gate.slot(wait=1.0) as first, gate.slot(wait=1.0) as second:
        assert (first, second) == (True, True)
        waiters = [threading.Thread(target=wait_for_a_slot) for _ in range(4)]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.5)
        room = os.open(gate._rooms[1], os.O_RDWR)  # the waiting room of a share of 2
        try:
            with pytest.raises(BlockingIOError):  # a waiter holds it; the others sleep
                fcntl.flock(room, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(room)
        assert got == []  # nobody went without a slot
    for waiter in waiters:
        waiter.join(30)
    assert got == [True] * 4  # each waiter got a slot in turn once they were let go


class Clock:
    """``time.monotonic`` for a pacer: a request's latency is what its call adds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def request(self, seconds: float) -> Callable[[float], None]:
        def call(timeout: float) -> None:
            self.now += seconds

        return call


def pacer_with_clock(monkeypatch: pytest.MonkeyPatch, senders: int = 8) -> tuple[Pacer, Clock]:
    clock = Clock()
    monkeypatch.setattr(pacing, "time", SimpleNamespace(monotonic=clock))
    route = Route(tracking_uri=server(), host_creds=lambda: None, senders=senders)
    return Pacer(route), clock


def test_a_share_is_halved_when_the_server_is_busy_and_grows_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pacer, clock = pacer_with_clock(monkeypatch)
    assert pacer.slots() == 8  # all of the host's slots at first
    pacer.send(clock.request(0.2))
    pacer.send(clock.request(5.0))  # slow, but answered within the timeout: no cut
    assert pacer.slots() == 8

    def busy(timeout: float) -> None:
        raise Busy("database busy", working=True)

    with pytest.raises(Busy):
        pacer.send(busy)
    assert pacer.slots() == 4
    with pytest.raises(Busy):
        pacer.send(busy)  # within a round trip of the cut: no second cut
    assert pacer.slots() == 4
    clock.now += 10.0
    with pytest.raises(Busy):
        pacer.send(busy)
    assert pacer.slots() == 2
    grown = []
    for _ in range(12):
        pacer.send(clock.request(0.2))
        grown.append(pacer.slots())
    assert grown == sorted(grown)  # additive: one slot per share's worth of answers
    assert (grown[0], grown[2]) == (2, 3)
    assert grown[-1] < 8  # slowly: not back to all at once
    for _ in range(40):
        pacer.send(clock.request(0.2))
    assert pacer.slots() == 8  # never past the route's senders


def test_an_outage_leaves_one_slot_and_a_slow_start(monkeypatch: pytest.MonkeyPatch) -> None:
    pacer, _ = pacer_with_clock(monkeypatch)

    def down(timeout: float) -> None:
        raise Outage("connection refused")

    with pytest.raises(Outage):
        pacer.send(down)
    assert pacer.slots() == 1
    assert pacer.window == SLOW_START


def test_a_timed_out_request_counts_as_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    pacer, clock = pacer_with_clock(monkeypatch)
    monkeypatch.setattr(pacer, "_healthy", lambda: True)  # /health answers: queued, not gone

    def timed_out(timeout: float) -> None:
        clock.now += timeout
        raise Busy("read timed out", timed_out=True)

    with pytest.raises(Busy):
        pacer.send(timed_out)
    assert pacer.slots() == 4
    assert pacer.timeout == pacing.MAX_TIMEOUT  # and the next request gets MLflow's 120 s


def test_a_share_never_exceeds_the_senders_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    pacer, clock = pacer_with_clock(monkeypatch, senders=2)
    assert pacer.slots() == 2
    for _ in range(20):
        pacer.send(clock.request(0.2))
    assert pacer.slots() == 2
