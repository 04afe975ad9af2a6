"""Replay leftovers: in the background at the next run, for a resumed run, or with ``sync``.

A leftover is a spool database whose writing process is gone (its lock is free): a
task that ended while the server was down, a forked child terminated before its
courier sent everything, or a process killed by SIGKILL. Replaying sends its records
in order, exactly as the live process would have. An owner's or child's run that
got no final status, and that the server still shows RUNNING, gets one: **KILLED**,
with ``michelangelo.error.type = ProcessEnded`` (the process ended without closing
the run, so it did not finish normally). It is never FINISHED.

Credentials come from the environment, as everywhere, and are only sent to the
server they belong to: a leftover of another server than the configured one is
replayed without credentials (and reported if that server wants some). A database
that cannot be read (truncated, overwritten) is reported with its file and reason,
and never stops the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from michelangelo_mlflow import _tags
from michelangelo_mlflow._logging import delivery as _delivery
from michelangelo_mlflow._logging.courier import TERMINAL, RunSpool
from michelangelo_mlflow._logging.delivery import Busy, Outage, Refused, Route
from michelangelo_mlflow._logging.pacing import Pacer
from michelangelo_mlflow._logging.storage import (
    Damaged,
    RunMeta,
    Storage,
    bytes_in,
    leftover_paths,
    writer_lives,
)
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._state import STATE

__all__ = [
    "SyncResult",
    "pending_bytes",
    "replay_in_background",
    "replay_run",
    "route_for_leftover",
    "sync",
]

PROCESS_ENDED = "ProcessEnded"
"""The ``michelangelo.error.type`` of a run whose process ended without closing it."""

_UNFINISHED = frozenset({"RUNNING", "SCHEDULED"})


@dataclass(frozen=True)
class SyncResult:
    """What ``sync`` did with one run's records in one leftover.

    Attributes:
        run_id: The run (empty for a damaged file).
        tracking_uri: Its server, without credentials.
        role: ``owner``, ``child`` or ``worker``.
        path: The spool database.
        sent: Records the server took.
        pending_bytes: Bytes still in the spool afterwards.
        completed: Whether the run now has its final status on the server.
        outcome: ``delivered``, ``pending`` (the server did not answer, or refused:
            see ``reason``), ``dry-run`` or ``damaged`` (the file cannot be read).
        reason: Why records are still pending, or what could not be read.
    """

    run_id: str
    tracking_uri: str
    role: str
    path: Path
    sent: int
    pending_bytes: int
    completed: bool
    outcome: Literal["delivered", "pending", "dry-run", "damaged"]
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


def _leftovers(directory: Path) -> Iterator[Storage | Damaged]:
    """Every leftover under ``directory``, adopted (the caller releases it), or why not."""
    own = {storage.path for storage in STATE.storages.values()}
    for path in leftover_paths(directory):
        if path in own:
            continue
        try:
            storage = Storage.adopt(path)
        except Damaged as damaged:
            yield damaged
            continue
        if storage is not None:
            yield storage


def _spool(storage: Storage, meta: RunMeta, route: Route, **kwargs: Any) -> RunSpool:
    return RunSpool(
        storage,
        meta,
        route,
        run_id=meta.run_id,
        experiment_id=meta.experiment_id,
        directory=storage.directory,
        role=meta.role,
        **kwargs,
    )


# --- in the background, when a run starts ----------------------------------------------
def replay_in_background(directory: Path, route: Route, *, interval: float) -> int:
    """Hand this server's leftovers under ``directory`` to the courier.

    Leftovers of other servers, and of runs open in this process, are left alone.

    Returns:
        How many runs' records are being replayed.
    """
    count = 0
    for found in _leftovers(directory):
        if isinstance(found, Damaged):
            continue  # reported by sync
        metas = [
            meta
            for meta in found.runs()
            if meta.tracking_uri == route.tracking_uri and meta.run_id not in STATE.spools
        ]
        if not metas or len(metas) < len(found.runs()):
            found.release(remove=found.empty())
            continue  # one of another server's, or of a run open here: not ours to finish
        group = _Group(found, len(metas))
        for meta in metas:
            spool = _spool(found, meta, route, interval=interval, on_drained=group.drained)
            spool.courier.add(spool)
            count += 1
    return count


class _Group:
    """The spools replaying one adopted storage: it is released when all are done."""

    def __init__(self, storage: Storage, count: int) -> None:
        self.storage = storage
        self.left = count

    def drained(self, spool: RunSpool) -> None:
        """Called by the courier when a spool's records are delivered: final status, then go."""
        try:
            if spool.delivery.error is None and _needs_final_status(spool):
                return  # the status is delivered on the courier's next round
        except (Outage, Busy, Refused):
            return  # tried again after the next delivery
        spool.courier.remove(spool)
        spool.on_drained = None
        self.left -= 1
        if self.left == 0:
            self.storage.release(remove=self.storage.empty())


# --- a resumed run: its own leftovers first ------------------------------------------------
def replay_run(directory: Path, route: Route, run_id: str, timeout: float) -> None:
    """Deliver a run's records left by earlier processes before it is resumed.

    So that ``next_step()`` and the metric history see them. Records that cannot be
    delivered within ``timeout`` seconds stay for ``sync``.
    """
    deadline = time.monotonic() + timeout
    for found in _leftovers(directory):
        if isinstance(found, Damaged):
            continue
        for meta in found.runs():
            if meta.run_id == run_id and meta.tracking_uri == route.tracking_uri:
                spool = _spool(found, meta, route)
                spool.role = "worker"  # the resumed run decides its status
                _deliver_now(spool, max(0.0, deadline - time.monotonic()))
        found.release(remove=found.empty())


# --- michelangelo-mlflow sync ---------------------------------------------------------------
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
        One result per run in each leftover (oldest first), and one per damaged file.
    """
    results = []
    for found in _leftovers(directory):
        if isinstance(found, Damaged):
            results.append(_damaged(found))
            continue
        try:
            for meta in found.runs():
                if dry_run:
                    results.append(_dry_run(found, meta))
                    continue
                spool = _spool(found, meta, route_for_leftover(meta.tracking_uri, settings))
                results.append(_replay(spool, timeout, on_progress))
        finally:
            found.release(remove=not dry_run and found.empty())
    return results


def _damaged(damaged: Damaged) -> SyncResult:
    return SyncResult(
        "", "", "", damaged.path, 0, _size(damaged.path), False, "damaged",
        f"cannot read this spool file ({damaged.reason}); the other runs are not affected: "
        "move it away once you no longer need it",
    )  # fmt: skip


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _dry_run(storage: Storage, meta: RunMeta) -> SyncResult:
    records = storage.read(meta.key, limit=1 << 30)
    final = any(kind == "u" and body[0] in TERMINAL for _, kind, body in records)
    reason = None if final or meta.role == "worker" else "no final status: sync marks it KILLED"
    return SyncResult(
        meta.run_id,
        meta.tracking_uri,
        meta.role,
        storage.path,
        0,
        storage.pending_bytes(meta.key),
        False,
        "dry-run",
        f"{len(records)} record(s) to send" + (f"; {reason}" if reason else ""),
    )


def _deliver_now(
    spool: RunSpool, timeout: float, on_progress: Callable[[int], None] | None = None
) -> str | None:
    """Deliver a spool in this thread until done, refused, or ``timeout``; why not, if not."""
    pacer = Pacer(spool.route)
    pacer.hurry = 1
    deadline = time.monotonic() + timeout
    while spool.pending_bytes() and spool.delivery.error is None:
        before = spool.pending_bytes()
        spool.deliver(pacer, budget=1 << 30)
        if on_progress is not None:
            on_progress(max(0, before - spool.pending_bytes()))
        if not spool.pending_bytes() or spool.delivery.error is not None:
            break
        if time.monotonic() >= deadline:
            return f"the server did not answer: {pacer.outage or 'busy'}"
        time.sleep(max(0.0, min(pacer.retry_at - time.monotonic(), deadline - time.monotonic())))
    return spool.delivery.error.message if spool.delivery.error is not None else None


def _replay(
    spool: RunSpool, timeout: float, on_progress: Callable[[int], None] | None
) -> SyncResult:
    reason = _deliver_now(spool, timeout, on_progress)
    if reason is None:
        try:
            if _needs_final_status(spool):
                reason = _deliver_now(spool, timeout, on_progress)
        except (Outage, Busy) as exc:
            reason = f"the server did not answer: {exc}"
        except Refused as exc:
            reason = exc.error.message
    pending = spool.pending_bytes()
    completed = spool.terminal_sent or spool.role == "worker"
    delivered = pending == 0 and reason is None
    assert spool.storage is not None
    return SyncResult(
        spool.run_id,
        spool.route.tracking_uri,
        spool.role,
        spool.storage.path,
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
    if spool.role == "worker" or spool.terminal_sent or spool.status_appended:
        return False
    if spool.pending_bytes():
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


def pending_bytes(directory: Path) -> int:
    """Bytes the leftovers under ``directory`` hold unsent (read-only; for display).

    What ``sync`` sends: a live writer's database, which may be locked to other
    processes while its runs are open, is its own process's to send.
    """
    return sum(bytes_in(path) for path in leftover_paths(directory) if not writer_lives(path))


def route_for_leftover(tracking_uri: str, settings: Settings) -> Route:
    """The route of a leftover's server: the settings' credentials only if it is theirs."""
    from michelangelo_mlflow._logging.opening import host_creds

    if settings.is_remote and settings.safe_tracking_uri == tracking_uri:
        creds = host_creds(settings)
    else:  # never send one server's credentials to another
        creds = host_creds(settings, uri=tracking_uri, credentials=False)
    return Route(
        tracking_uri,
        creds,
        timeout=10.0,
        databricks=tracking_uri.startswith("databricks"),
    )
