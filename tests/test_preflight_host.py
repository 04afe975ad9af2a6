"""One preflight for the processes of a host: real servers, real processes, real files."""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import michelangelo_mlflow as mm
from michelangelo_mlflow._preflight import preflight
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow._versions import client_version, known_server_version
from michelangelo_mlflow.exceptions import TrackingServerUnreachableError
from michelangelo_mlflow.testing import TrackingServer, reset
from tests.helpers.processes import end, start_together

PREFLIGHT = ('"GET /health ', '"POST /api/2.0/mlflow/experiments/search ', '"GET /version ')

_TASK = """
import sys
import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import MichelangeloMlflowError

print("ready", flush=True)
sys.stdin.readline()
settings = mm.Settings(tracking_uri=sys.argv[1], tracking_password=sys.argv[2] or None,
                       tracking_username=sys.argv[2] and "admin" or None)
try:
    report = mm.preflight(settings).raise_for_failure()
except MichelangeloMlflowError as exc:
    print(type(exc).__name__, flush=True)
else:
    print(report.verdict.value, report.server_version, flush=True)
"""


@pytest.fixture
def host_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own host directory, for this process and the processes it starts."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path / f"michelangelo-mlflow-{os.getuid()}"


def tasks(url: str, count: int, password: str = "") -> list[str]:
    """What ``count`` processes that check ``url`` at the same moment report."""
    processes = start_together([sys.executable, "-c", _TASK, url, password], count, timeout=60)
    try:
        for process in processes:
            process.wait(timeout=60)
    finally:
        outputs = [end(process) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    return [out.strip() for out, _ in outputs]


def preflight_requests(server: TrackingServer, since: int) -> list[int]:
    """How many of each preflight request the server answered since log offset ``since``."""
    with server.log_path.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return [text.count(request) for request in PREFLIGHT]


def test_processes_starting_at_once_share_one_check(
    tracking_server: TrackingServer, host_directory: Path
) -> None:
    since = tracking_server.log_path.stat().st_size
    outputs = tasks(tracking_server.url, 6)
    assert outputs == [f"compatible {client_version()}"] * 6
    # Each asks /health itself (a down server fails in seconds); one checks the rest.
    assert preflight_requests(tracking_server, since) == [6, 1, 1]
    # Later processes use it too, within its time to live.
    assert tasks(tracking_server.url, 2) == [f"compatible {client_version()}"] * 2
    assert preflight_requests(tracking_server, since) == [8, 1, 1]
    assert host_directory.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in host_directory.glob("preflight*")} == {0o600}


def test_a_verdict_is_never_used_with_other_credentials_nor_a_failure_shared(
    auth_server: TrackingServer, host_directory: Path
) -> None:
    since = auth_server.log_path.stat().st_size
    right = auth_server.admin_password
    assert tasks(auth_server.url, 2, right) == [f"compatible {client_version()}"] * 2
    assert preflight_requests(auth_server, since) == [2, 1, 1]
    # Another password, or none, is checked by every process for itself: each its own error.
    assert tasks(auth_server.url, 3, "not-the-password") == ["AuthenticationError"] * 3
    assert tasks(auth_server.url, 2) == ["AuthenticationError"] * 2
    health, search, _ = preflight_requests(auth_server, since)
    assert (health, search) == (7, 6)
    assert right not in "".join(p.name for p in host_directory.iterdir())


def test_a_failed_check_is_not_shared(host_directory: Path) -> None:
    from tests._faults import closed_port

    url = f"http://127.0.0.1:{closed_port()}"
    assert tasks(url, 3) == ["TrackingServerUnreachableError"] * 3


def test_reset_a_zero_ttl_or_an_untrusted_directory_means_checking_again(
    tracking_server: TrackingServer, host_directory: Path
) -> None:
    settings = mm.Settings(tracking_uri=tracking_server.url)
    since = tracking_server.log_path.stat().st_size
    first = preflight(settings)
    STATE.preflight_reports.clear()  # as another process: only the host's verdict is left
    shared = preflight(settings)
    assert shared is not first
    assert shared.to_dict() == first.to_dict() | {"checks": shared.to_dict()["checks"]}
    assert [c.detail for c in shared.checks] == [c.detail for c in first.checks]
    assert known_server_version(tracking_server.url) == client_version()
    assert preflight_requests(tracking_server, since) == [2, 1, 1]

    reset()  # the next run checks its server: another process's verdict is not used
    preflight(settings)
    assert preflight_requests(tracking_server, since) == [3, 2, 2]

    STATE.preflight_reports.clear()
    preflight(settings.model_copy(update={"preflight_host_ttl": 0.0}))
    assert preflight_requests(tracking_server, since) == [4, 3, 3]

    for verdict in host_directory.glob("preflight-*.json"):
        verdict.write_text('{"format": 1, "checked": 1e99, "passed": {"torn')
    STATE.preflight_reports.clear()
    assert preflight(settings).ok
    assert preflight_requests(tracking_server, since) == [5, 4, 4]

    host_directory.chmod(0o777)  # others could have written what is in it: not read
    STATE.preflight_reports.clear()
    assert preflight(settings).ok
    assert preflight_requests(tracking_server, since) == [6, 5, 5]
    host_directory.chmod(0o700)


def test_a_check_in_progress_is_waited_for_up_to_the_deadline(
    tracking_server: TrackingServer, host_directory: Path
) -> None:
    settings = mm.Settings(tracking_uri=tracking_server.url, preflight_deadline=2.0)
    preflight(settings)  # makes the directory and the key
    for verdict in host_directory.glob("preflight-*.json"):
        verdict.unlink()
    [lock] = host_directory.glob("preflight-*.lock")
    reset()
    since = tracking_server.log_path.stat().st_size
    with lock.open("w") as held:  # another process's check in progress
        fcntl.flock(held, fcntl.LOCK_EX)
        reports: list[mm.PreflightReport] = []
        waiter = threading.Thread(target=lambda: reports.append(preflight(settings)))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive()  # waiting, not checking
        assert preflight_requests(tracking_server, since) == [0, 0, 0]
    waiter.join(10)  # let go without a verdict: it checks for itself
    assert reports
    assert reports[0].ok
    assert preflight_requests(tracking_server, since) == [1, 1, 1]

    reset()
    with lock.open("w") as held:  # a check that never ends: checked after the deadline
        fcntl.flock(held, fcntl.LOCK_EX)
        report = preflight(settings.model_copy(update={"preflight_deadline": 0.3}))
    assert report.ok
    assert preflight_requests(tracking_server, since) == [2, 2, 2]


def test_a_server_down_since_the_shared_check_fails_in_seconds(
    own_server: TrackingServer, host_directory: Path
) -> None:
    settings = mm.Settings(tracking_uri=own_server.url, preflight_deadline=1.0)
    assert preflight(settings).ok
    STATE.preflight_reports.clear()  # as another process, after the server went down
    own_server.kill()
    report = preflight(settings)
    assert report.reachable is False
    with pytest.raises(TrackingServerUnreachableError, match=own_server.url):
        report.raise_for_failure()
