"""Replay leftover spool segments: in the background at the next run, or with ``sync``.

A leftover is a segment whose writing process is gone (its lock is free): a task
that ended while the server was down, or one killed by SIGKILL. Replaying sends its
records in order, exactly as the live process would have. An owner's or child's
segment that holds no final status, of a run the server still shows RUNNING, gets
one: **KILLED**, with ``michelangelo.error.type = ProcessEnded`` (the process ended
without closing the run, so it did not finish normally). It is never FINISHED.

Credentials come from the environment, as everywhere, and are only sent to the
server they belong to: a leftover of another server than the configured one is
replayed without credentials (and reported if that server wants some).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from michelangelo_mlflow import _delivery, _tags
from michelangelo_mlflow._courier import TERMINAL, RunSpool, courier
from michelangelo_mlflow._delivery import Outage, Refused, Route
from michelangelo_mlflow._retry import Budget, retry_call
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._spool import Segment, leftovers
from michelangelo_mlflow._state import STATE

__all__ = ["SyncResult", "count_records", "pending_bytes", "replay_in_background", "sync"]

PROCESS_ENDED = "ProcessEnded"
"""The ``michelangelo.error.type`` of a run whose process ended without closing it."""

_UNFINISHED = frozenset({"RUNNING", "SCHEDULED"})


@dataclass(frozen=True)
class SyncResult:
    """What ``sync`` did with one leftover segment.

    Attributes:
        run_id: The run.
        tracking_uri: Its server, without credentials.
        role: ``owner``, ``child`` or ``worker``.
        path: The segment's directory.
        sent: Records the server took.
        pending_bytes: Bytes still in the spool afterwards.
        completed: Whether the run now has its final status on the server.
        outcome: ``delivered``, ``pending`` (the server did not answer, or refused:
            see ``reason``) or ``dry-run``.
        reason: Why records are still pending, or ``None``.
    """

    run_id: str
    tracking_uri: str
    role: str
    path: Path
    sent: int
    pending_bytes: int
    completed: bool
    outcome: Literal["delivered", "pending", "dry-run"]
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``sync --json`` prints)."""
        return {
            "run_id": self.run_id,
            "tracking_uri": self.tracking_uri,
            "role": self.role,
            "path": str(self.path),
            "sent": self.sent,
            "pending_bytes": self.pending_bytes,
            "completed": self.completed,
            "outcome": self.outcome,
            "reason": self.reason,
        }


def replay_in_background(directory: Path, route: Route, *, interval: float) -> int:
    """Hand this server's leftovers under ``directory`` to the courier.

    Leftovers of other servers, and of runs open in this process, are left alone.

    Returns:
        How many segments are being replayed.
    """
    count = 0
    for segment in leftovers(directory):
        meta = segment.meta
        if meta.tracking_uri != route.tracking_uri or meta.run_id in STATE.spools:
            segment.close(remove=False)
            continue
        spool = RunSpool(segment, route, courier(interval), on_drained=_finish_in_background)
        spool.courier.add(spool)
        count += 1
    return count


def sync(
    directory: Path,
    settings: Settings,
    *,
    dry_run: bool = False,
    timeout: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
) -> list[SyncResult]:
    """Replay every leftover under ``directory`` now, in this thread.

    Args:
        directory: The spool directory.
        settings: Credentials and TLS come from here, for the server they name.
        dry_run: Only report what would be sent.
        timeout: Seconds to keep trying one server that does not answer.
        on_progress: Called with the bytes delivered after each request.

    Returns:
        One result per leftover segment, oldest first.
    """
    results = []
    for segment in leftovers(directory):
        if dry_run:
            results.append(_dry_run(segment))
            segment.close(remove=False)
            continue
        route = _route_for(segment.meta.tracking_uri, settings)
        spool = RunSpool(segment, route, courier(settings.flush_interval))
        results.append(_replay(spool, timeout, on_progress))
    return results


def pending_bytes(directory: Path) -> int:
    """Bytes the segments under ``directory`` hold unsent (read without locking; for display)."""
    total = 0
    for records in directory.glob("*/*/records.jsonl") if directory.is_dir() else ():
        try:
            size = records.stat().st_size
        except OSError:
            continue
        try:
            acked = int((records.parent / "acked").read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            acked = 0
        total += max(0, size - acked)
    return total


def count_records(segment: Segment) -> tuple[int, bool]:
    """How many records a segment holds unsent, and whether one is a final status."""
    _, entries = segment.read(limit=1 << 30)
    records = [record for _, record in entries if record[0] != "#"]
    final = any(record[0] == "u" and record[1] in TERMINAL for record in records)
    return len(records), final


def _dry_run(segment: Segment) -> SyncResult:
    meta = segment.meta
    records, final = count_records(segment)
    reason = None if final or meta.role == "worker" else "no final status: sync marks it KILLED"
    return SyncResult(
        meta.run_id,
        meta.tracking_uri,
        meta.role,
        segment.path,
        0,
        segment.pending_bytes,
        False,
        "dry-run",
        f"{records} record(s) to send" + (f"; {reason}" if reason else ""),
    )


def _replay(
    spool: RunSpool, timeout: float, on_progress: Callable[[int], None] | None
) -> SyncResult:
    def attempt(_: float) -> None:
        before = spool.segment.pending_bytes
        spool.deliver()
        if on_progress is not None:
            on_progress(max(0, before - spool.segment.pending_bytes))
        if spool.delivery.outage is not None:
            raise Outage(spool.delivery.outage)
        if spool.delivery.error is None and _needs_final_status(spool):
            spool.deliver()

    reason: str | None = None
    try:
        retry_call(attempt, attempts=100, budget=Budget(timeout), timeout=timeout, on=(Outage,))
    except Outage as exc:
        reason = f"the server did not answer: {exc}"
    except Refused as exc:
        reason = exc.error.message
    if spool.delivery.error is not None:
        reason = spool.delivery.error.message
    pending = spool.segment.pending_bytes
    completed = spool.terminal_sent or spool.segment.meta.role == "worker"
    delivered = pending == 0 and spool.delivery.error is None and reason is None
    spool.segment.close(remove=delivered)
    meta = spool.segment.meta
    return SyncResult(
        meta.run_id,
        meta.tracking_uri,
        meta.role,
        spool.segment.path,
        spool.delivery.sent,
        pending,
        completed and delivered,
        "delivered" if delivered else "pending",
        reason,
    )


def _needs_final_status(spool: RunSpool) -> bool:
    """Spool KILLED for an owner's run the server still shows unfinished; whether it did.

    Raises:
        Outage: The server did not answer the read.
        Refused: It refused it.
    """
    if spool.segment.meta.role == "worker" or spool.terminal_sent or spool.status_appended:
        return False
    if spool.segment.pending_bytes:
        return False
    run = _delivery.fetch_run(spool.route, spool.run_id)
    if run.info.status not in _UNFINISHED:
        spool.terminal_sent = True  # it has one already (sent by an earlier replay)
        return False
    now = int(time.time() * 1000)
    spool.append([
        ["t", _tags.ERROR_TYPE, PROCESS_ENDED],
        ["t", _tags.ERROR_MESSAGE, "the process ended without closing the run (killed, "
         "for example by SIGKILL or out of memory); its records were replayed from the "
         "spool"],
        ["u", "KILLED", now, None],
    ])  # fmt: skip
    spool.status_appended = True
    return True


def _finish_in_background(spool: RunSpool) -> None:
    """Called by the courier when a leftover is drained: final status, then let go."""
    try:
        if spool.delivery.error is None and _needs_final_status(spool):
            return  # the status is delivered on the courier's next round
    except (Outage, Refused):
        return  # tried again after the next delivery
    spool.courier.remove(spool)
    spool.segment.close(remove=spool.delivery.error is None and not spool.segment.pending_bytes)


def _route_for(tracking_uri: str, settings: Settings) -> Route:
    from michelangelo_mlflow._store import host_creds

    if settings.is_remote and settings.safe_tracking_uri == tracking_uri:
        creds = host_creds(settings)
    else:  # never send one server's credentials to another
        creds = host_creds(settings, uri=tracking_uri, credentials=False)
    return Route(
        tracking_uri,
        creds,
        timeout=min(30.0, max(5.0, settings.spool_grace / 3)),
        databricks=tracking_uri.startswith("databricks"),
    )
