"""The host's gate: at most ``senders`` requests in flight to one server, from any process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

from michelangelo_mlflow._logging.gate import SendGate

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
