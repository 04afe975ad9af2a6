"""Close a run's spool: children first, forked writers next, the run's own status last.

A run and its children share one deadline. It starts at ``spool_grace`` seconds and
is extended while the server makes progress (this process delivered records) or
answers at all (a "busy" server is working, not gone), up to ``PROGRESS_CAP`` graces
in all. Meanwhile one line on stderr every 10 s says what is left and at what rate.

In order:

1. A child run that has no final status gets the block's.
2. Records for these runs that other processes wrote (a forked child, a pool worker)
   are delivered: a dead writer's storage is adopted and sent from here; a live
   writer's courier is waited for.
3. The run's final status is stored (a failure or kill wins over a held FINISHED),
   and sent after every record of its children.

What the deadline leaves undelivered stays in the spool for ``michelangelo-mlflow
sync`` (or the next tracked run on this server), final status included.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from michelangelo_mlflow._logging.courier import (
    TERMINAL,
    Delivery,
    RunSpool,
    progress_line,
    release_storage,
)
from michelangelo_mlflow._logging.storage import (
    Damaged,
    Storage,
    count_for,
    leftover_paths,
    runs_in,
)
from michelangelo_mlflow._state import STATE

__all__ = ["PROGRESS_CAP", "REPORT_EVERY", "close_run"]

PROGRESS_CAP = 10
"""A run end waits at most this many graces in all while the server makes progress."""

REPORT_EVERY = 10.0
"""Seconds between the progress lines a waiting run end writes on stderr."""


@dataclass
class _Foreign:
    """Records of the closing runs held by other processes' storages."""

    adopted: list[tuple[Storage, RunSpool]] = field(default_factory=list)
    live: dict[Path, set[str]] = field(default_factory=dict)
    """Live writers' storages, with the runs of theirs the close waits for."""


def close_run(spool: RunSpool, *, status: str | None, grace: float) -> list[Delivery]:
    """Deliver the rest of a run and its children, then let go of their spools.

    Args:
        spool: The run's spool.
        status: The status that matches how the block ended (``None`` for a worker,
            which never ends the run).
        grace: Seconds to wait without progress.

    Returns:
        What became of each spool's records, the run's own last.
    """
    family = [*_descendants(spool), spool]
    run_ids = {member.run_id for member in family}
    waiter = _Waiter(family, grace)
    with _hurry(family):
        for member in family:
            member.closing = True
        if status is not None:
            _end_children(family[:-1], status)
        foreign = _foreign(spool, run_ids)
        try:
            waiter.wait([*family, *(s for _, s in foreign.adopted)], foreign.live)
            if status is not None and spool.role == "owner":
                final, end_time = spool.final_status(status)
                spool.append([["u", final, end_time or _now_ms(), None]])
                spool.status_appended = True
            waiter.wait(family, {})
        finally:
            outcomes = [_outcome(member) for member in family]
            _let_go(family, foreign)
    return outcomes


def _descendants(spool: RunSpool) -> list[RunSpool]:
    found = []
    for child in spool.children:
        found += [*_descendants(child), child]
    return found


def _end_children(children: list[RunSpool], status: str) -> None:
    for child in children:
        if child.status not in TERMINAL:
            child.append([["u", status, _now_ms(), None]])
            child.status_appended = True


@contextlib.contextmanager
def _hurry(family: list[RunSpool]) -> Iterator[None]:
    pacers = {id(p): p for p in (member.pacer() for member in family)}
    for pacer in pacers.values():
        pacer.hurry_up()  # a backoff drawn before the close is cut to a second as well
    try:
        yield
    finally:
        for pacer in pacers.values():
            pacer.calm_down()


def _foreign(spool: RunSpool, run_ids: set[str]) -> _Foreign:
    """Other storages in the spool directory holding records of these runs."""
    found = _Foreign()
    own = spool.storage.path if spool.storage is not None else None
    for path in leftover_paths(spool.directory):
        if path == own:
            continue
        try:
            storage = Storage.adopt(path)
        except Damaged:
            continue  # reported by sync; never blocks a run's end
        if storage is None:
            wanted = _wanted(runs_in(path), run_ids, live=True)
            if count_for(path, wanted):
                found.live[path] = wanted
            continue
        wanted = _wanted([(meta.run_id, meta.role) for meta in storage.runs()], run_ids, live=False)
        metas = [
            meta
            for meta in storage.runs()
            if meta.run_id in wanted and meta.tracking_uri == spool.route.tracking_uri
        ]
        if not metas:
            storage.release(remove=False)
            continue
        for meta in metas:
            leftover = RunSpool(
                storage,
                meta,
                spool.route,
                run_id=meta.run_id,
                experiment_id=meta.experiment_id,
                directory=spool.directory,
                role="worker",
                interval=spool.interval,
            )
            leftover.closing = True
            found.adopted.append((storage, leftover))
            leftover.courier.add(leftover)
    return found


def _wanted(runs: list[tuple[str, str]], run_ids: set[str], *, live: bool) -> set[str]:
    """The runs of another writer's storage that a closing run waits for.

    A worker of one of the closing runs (a Ray worker, a forked child) logs for that
    run's family: the runs it created under it (Ray's ``setup_mlflow``) are waited for
    too, though the closing process never knew them. A leftover's records of the
    closing runs (an earlier attempt's) are delivered too. Another live process that
    owns one of them (the parent, seen from a forked child that ends first) sends its
    records itself, as plain MLflow's processes each do: nobody waits for them.
    """
    if any(run_id in run_ids and role == "worker" for run_id, role in runs):
        return {run_id for run_id, _ in runs}
    if live:
        return set()
    return {run_id for run_id, _ in runs if run_id in run_ids}


class _Waiter:
    """One deadline for a closing family of runs, extended while the server makes progress."""

    def __init__(self, family: list[RunSpool], grace: float) -> None:
        self.grace = grace
        self.start = time.monotonic()
        self.deadline = self.start + grace
        self.cap = self.start + grace * PROGRESS_CAP
        self.family = family
        self.courier = family[-1].courier
        self.seen = self.courier.delivered
        """Records the courier had delivered when the deadline was last looked at."""
        self.reported = self.start
        self.reported_count = self.seen

    def wait(self, spools: list[RunSpool], live: dict[Path, set[str]]) -> bool:
        """Wait until ``spools`` are idle and ``live`` writers hold none of their runs'."""
        for spool in spools:
            self.courier.wake(spool)
        while True:
            pending = [s for s in spools if not s.idle()]
            live = {p: wanted for p, wanted in live.items() if count_for(p, wanted)}
            if not pending and not live:
                return True
            now = time.monotonic()
            self._extend(now, pending)
            if now >= self.deadline:
                return False
            for spool in pending:
                self.courier.wake(spool)
            if pending:
                pending[0].flush(min(0.2, self.deadline - now))
            else:
                time.sleep(min(0.1, self.deadline - now))

    def _extend(self, now: float, pending: list[RunSpool]) -> None:
        delivered = self.courier.delivered
        working = any(s.pacer().busy_recently(self.grace) for s in pending)
        if delivered > self.seen or working:  # progress since the last look, not since start
            self.deadline = min(self.cap, max(self.deadline, now + self.grace))
        self.seen = delivered
        if now - self.reported >= REPORT_EVERY and pending:
            rate = (delivered - self.reported_count) / max(now - self.reported, 1e-9)
            progress_line(pending, rate)
            self.reported = now
            self.reported_count = delivered


def _let_go(family: list[RunSpool], foreign: _Foreign) -> None:
    courier = family[-1].courier
    with STATE.lock:
        for member in family:
            if STATE.spools.get(member.run_id) is member:
                del STATE.spools[member.run_id]
    for member in family:
        courier.remove(member)
    for storage, leftover in foreign.adopted:
        courier.remove(leftover)
        storage.release(remove=storage.empty())
    release_storage(family[-1].directory)


def _outcome(spool: RunSpool) -> Delivery:
    delivery = spool.delivery
    delivery.pending_bytes = spool.pending_bytes()
    delivery.delivered = delivery.pending_bytes == 0 and delivery.error is None
    if spool.outage_now() and not delivery.delivered:
        delivery.outage = spool.pacer().outage
    if spool.storage is not None and spool.meta is not None:
        delivery.rejected = [
            ([kind, *body], reason) for kind, body, reason in spool.storage.rejected(spool.meta.key)
        ] or delivery.rejected
    return delivery


def _now_ms() -> int:
    return int(time.time() * 1000)
