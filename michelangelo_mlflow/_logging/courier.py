"""Run spools, and the courier thread that empties them.

While a tracked run is open, every metric, param, tag and status of it goes to its
:class:`RunSpool` (by way of this SDK's tracking store, whatever called MLflow): the
record is committed to this process's spool database and the call returns. The
:class:`Courier`, one daemon thread per process, sends the records in order and in
batches, every ``flush_interval`` seconds or as soon as a batch is full, paced per
server by a :class:`~michelangelo_mlflow._logging.pacing.Pacer`.

A run spool also answers for its run when the server cannot: which params are set
(so that changing one is refused at once, as the server would), and the run as last
seen plus what was logged since (so ``mlflow.get_run`` inside a run keeps working
during an outage).

A forked child never uses what it inherited: :func:`after_fork_in_child` drops the
parent's storage connection, courier thread and locks, and turns every inherited
run spool into a *worker* spool of the child, which writes to the child's own
storage on its first record and is delivered by the child's own courier (or, when
the child ends first, by the run's owner at its close).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from michelangelo_mlflow import _signals
from michelangelo_mlflow._logging import delivery as _delivery
from michelangelo_mlflow._logging.delivery import (
    Busy,
    Invalid,
    Outage,
    Record,
    Refused,
    Route,
    Unit,
)
from michelangelo_mlflow._logging.pacing import Pacer
from michelangelo_mlflow._logging.records import encode_body, encode_metric, encode_records
from michelangelo_mlflow._logging.storage import Role, RunMeta, Storage, abandon_after_fork
from michelangelo_mlflow._params import redact_value
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    MichelangeloMlflowWarning,
    TrackingError,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = [
    "TERMINAL",
    "Courier",
    "Delivery",
    "RunSpool",
    "courier",
    "hold_for_full_batch",
    "open_child",
    "open_run",
    "storage_for",
    "take_over",
]

log = logging.getLogger("michelangelo_mlflow.spool")

TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
"""Run statuses that end a run."""

WAKE_BYTES = 64 * 1024
"""Pending bytes (about a full batch of metric points) that wake the courier early."""

HOLD_INTERVALS = 3
"""Intervals past its due time a spool still being logged to may wait for a full batch."""


@dataclass
class Delivery:
    """What became of a run spool's records; the outcome of closing it.

    Attributes:
        delivered: Whether every record reached the server.
        sent: Records the server took.
        pending_bytes: Bytes still in the spool.
        dropped: Metric points dropped at the size cap.
        rejected: Records the server refused, each with its reason.
        error: The typed error that stopped delivery (credentials, unknown run …).
        outage: Why the server did not take the rest, when it did not answer.
        path: The spool database holding what is left.
    """

    delivered: bool = False
    sent: int = 0
    pending_bytes: int = 0
    dropped: int = 0
    rejected: list[tuple[Record, str]] = field(default_factory=list)
    error: MichelangeloMlflowError | None = None
    outage: str | None = None
    path: Path | None = None


class RunSpool:
    """One run's records in this process: stored, then delivered by the courier.

    Args:
        storage: The storage its records go to (``None``: this process's, opened on
            the first record).
        meta: The run's entry in ``storage`` (``None`` with ``storage``).
        route: Where its records go.
        run: The run as the server last returned it (``None`` for a leftover).
        directory: The spool directory.
        role: ``owner``, ``child`` or ``worker`` (see ``RunMeta``).
        max_bytes: Pending bytes above which the oldest metric points are dropped.
        secrets: Secret values redacted from every param and tag, whoever logs them.
        interval: Seconds between deliveries of a spool that has not filled a batch.
        on_drained: Called by the courier when a leftover's records are all delivered.
    """

    def __init__(
        self,
        storage: Storage | None,
        meta: RunMeta | None,
        route: Route,
        *,
        run_id: str,
        experiment_id: str,
        directory: Path,
        role: Role,
        run: Run | None = None,
        max_bytes: int = 1 << 30,
        secrets: tuple[str, ...] = (),
        interval: float = 1.0,
        on_drained: Callable[[RunSpool], None] | None = None,
    ) -> None:
        self.storage = storage
        self.meta = meta
        self.route = route
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.directory = directory
        self.role: Role = role
        self.pid = _pid()
        self.max_bytes = max_bytes
        self.secrets = secrets
        self.interval = interval
        self.on_drained = on_drained
        self.run = run
        self.params: dict[str, str] = dict(run.data.params) if run is not None else {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, tuple[float, int, int]] = {}
        self.status: str | None = None
        self.held: tuple[str, int | None] | None = None
        """A terminal status someone else wrote for this owned run: sent at its close."""
        self.closing = False
        self.terminal_sent = False
        self.status_appended = False
        self.delivery = Delivery(path=storage.path if storage is not None else None)
        self.children: list[RunSpool] = []
        self.attached: set[int] = set()
        """Frameworks' loggers whose settings were applied to this run (attach.py)."""
        self._needs_compaction = False
        self._warned_cap = False
        self._settled = threading.Condition()
        self._direct: Any = None

    @property
    def courier(self) -> Courier:
        """The process's courier."""
        return courier(self.interval)

    # --- the logging path (any thread) -------------------------------------------------
    def log(
        self,
        metrics: Iterable[Any] = (),
        params: Iterable[Any] = (),
        tags: Iterable[Any] = (),
    ) -> None:
        """Spool MLflow ``Metric``, ``Param`` and ``RunTag`` entities; returns once stored.

        Params and tags are redacted on the way in (a secret-looking key, a configured
        secret, a URL's password), whoever logs them: the spool and the server never
        hold a secret. Values are taken as MLflow's entities take them (numpy scalars
        and any real number for value, step and timestamp).

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` when a param already has
                another value (as the server would answer; nothing is spooled).
        """
        records: list[Record] = []
        for param in params:
            value = redact_value(param.key, str(param.value), self.secrets)
            known = self.params.get(param.key)
            if known is not None and known != value:
                _raise_changed_param(self.run_id, param.key, known, value)
            records.append(["p", param.key, value])
        for metric in metrics:  # a loop, not a generator: log_metric's one point is the hot path
            records.append(encode_metric(metric))
        for t in tags:
            records.append(["t", t.key, redact_value(t.key, str(t.value), self.secrets)])
        if records:
            self.append(records)

    def log_metric(self, metric: Any) -> None:
        """Spool one MLflow ``Metric``; returns once stored (:meth:`log`'s path for one point).

        ``mlflow.log_metric`` in a training loop makes this the call made most often, so
        it takes the fewest steps: one record, encoded once, stored and remembered.
        """
        record = encode_metric(metric)
        body = encode_body(record)
        with _signals.critical():
            storage, meta = self._storage()
            pending = storage.append_one(meta.key, "m", body)
            self._remember_metric(record)
        if pending > self.max_bytes:
            self._over_cap()
        elif pending >= WAKE_BYTES and not self._woken(pending):
            self.courier.wake()

    def delete_tag(self, key: str) -> None:
        """Spool the deletion of a tag."""
        self.append([["d", key]])

    def keep_artifact(self, local: str, artifact_path: str | None, repository: str) -> Path:
        """Copy a file or directory into the spool, to upload when the server answers again.

        Returns:
            Where the copy is kept.
        """
        storage, _ = self._storage()
        try:
            relative = storage.keep(Path(local))
        except OSError as exc:  # a full or read-only disk: upload from where the user left it
            log.warning(
                "could not copy %s into the spool (%s); it is uploaded from where it is when "
                "the server answers again: keep it there until the run ends", local, exc,
            )  # fmt: skip
            relative = str(Path(local).resolve())
        self.append([["a", relative, artifact_path, repository]])
        return storage.files / relative

    def update(self, status: str | None, end_time: int | None, run_name: str | None) -> None:
        """Spool a run update: its status (a terminal one ends the run) or its name.

        A terminal status for a run this process owns is held instead (whoever wrote
        it: a framework's ``finalize``, ``mlflow.end_run()``): the block decides the
        run's status when it ends (see :meth:`final_status`). A worker's is dropped:
        the run's owner ends it.
        """
        if status in TERMINAL and self.role != "child":
            if self.role == "owner" and not self.closing:
                self.held = (status, end_time)
            # The owner's close stores the final status itself, after everything else;
            # a worker (a forked child, a Ray worker) never ends the run.
            status = end_time = None
            if run_name is None:
                return
        self.append([["u", status, end_time, run_name]])

    def final_status(self, ours: str) -> tuple[str, int | None]:
        """The status the run ends with: a failure or kill wins over a held FINISHED.

        Args:
            ours: The status that matches how the block ended.

        Returns:
            ``(status, end_time)``; ``end_time`` is the held one when the held status wins.
        """
        if ours == "FINISHED" and self.held is not None:
            return self.held
        return ours, None

    def append(self, records: list[Record]) -> None:
        """Store records, remember what they set, and nudge the courier."""
        with _signals.critical():
            storage, meta = self._storage()
            pending = storage.append(meta.key, encode_records(records))
            self._remember(records)
        if pending > self.max_bytes:
            self._over_cap()
        elif pending >= WAKE_BYTES and not self._woken(pending):
            self.courier.wake()

    def _woken(self, pending: int) -> bool:
        """Whether the courier was already woken for this batch (once a batch, not a call)."""
        batch = pending // WAKE_BYTES
        woken = getattr(self, "_woken_batch", 0) == batch
        self._woken_batch = batch
        return woken

    def _storage(self) -> tuple[Storage, RunMeta]:
        storage, meta = self.storage, self.meta
        if storage is None or meta is None or storage.closed:
            storage = storage_for(self.directory)
            meta = storage.add_run(self.run_id, self.route.tracking_uri, self.experiment_id,
                                   self.role)  # fmt: skip
            self.storage, self.meta = storage, meta
            self.delivery.path = storage.path
            self.courier.add(self)
        return storage, meta

    def _remember(self, records: list[Record]) -> None:
        for record in records:
            kind = record[0]
            if kind == "p":
                self.params[record[1]] = record[2]
            elif kind == "t":
                self.tags[record[1]] = record[2]
            elif kind == "m":
                self._remember_metric(record)
            elif kind == "d":
                self.tags.pop(record[1], None)
            elif kind == "u" and record[1] is not None:
                self.status = record[1]

    def _remember_metric(self, record: Record) -> None:
        key, value, timestamp, step = record[1], record[2], record[3], record[4]
        known = self.metrics.get(key)
        if known is None or (step, timestamp) >= (known[2], known[1]):
            self.metrics[key] = (value, timestamp, step)

    def _over_cap(self) -> None:
        self._needs_compaction = True
        if not self._warned_cap:
            self._warned_cap = True
            warnings.warn(
                f"the spool of run {self.run_id} holds more than {self.max_bytes} bytes the "
                f"tracking server at {self.route.tracking_uri} has not taken yet; from now on "
                "the oldest metric points of this run are dropped to stay under the cap "
                "(params, tags and the status never are); raise "
                "MICHELANGELO_MLFLOW_SPOOL_MAX_BYTES to keep more",
                MichelangeloMlflowWarning,
                stacklevel=6,
            )
        self.courier.wake()

    # --- reading while the server may be away -------------------------------------------
    def snapshot(self) -> Run | None:
        """The run as last read from the server, with everything logged since on top."""
        if self.run is None:
            return None
        from mlflow.entities import Metric, Param, Run, RunData, RunTag

        params = {**self.run.data.params, **self.params}
        tags = {**self.run.data.tags, **self.tags}
        metrics = {
            key: Metric(key, value, timestamp, step)
            for key, (value, timestamp, step) in self.metrics.items()
        }
        for key, value in self.run.data.metrics.items():
            metrics.setdefault(key, Metric(key, value, 0, 0))
        data = RunData(
            metrics=list(metrics.values()),
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        return Run(self.run.info, data)

    def refresh(self, wait: float) -> Run | None:
        """Deliver what is pending (up to ``wait`` seconds), then read the run from the server.

        Returns:
            The run from the server, or ``None`` when the server is not answering.

        Raises:
            MichelangeloMlflowError: The server refused the read (credentials, unknown run).
        """
        if self.outage_now():
            return None
        self.flush(wait)
        try:
            run = _delivery.fetch_run(self.route, self.run_id)
        except (Outage, Busy) as exc:
            self.pacer().failed(exc)
            return None
        except Refused as exc:
            raise exc.error from exc.__cause__
        self.run = run
        return run

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the run's server answers a quick ``/health`` now (and no outage is known)."""
        if self.outage_now():
            return False
        try:
            _delivery.health(self.route, timeout)
        except Outage as exc:
            self.pacer().failed(exc)
            return False
        return True

    def outage_now(self) -> bool:
        """Whether the run's server did not answer the last attempt."""
        return self.pacer().outage is not None

    def pacer(self) -> Pacer:
        """The pacing of this run's server."""
        return self.courier.pacer(self.route)

    def direct_store(self) -> Any:
        """MLflow's REST store for this run's server and credentials, for calls not spooled."""
        if self._direct is None:
            self._direct = _delivery.direct_store(
                self.route.host_creds, databricks=self.route.databricks
            )
        return self._direct

    # --- waiting ------------------------------------------------------------------------
    def pending_bytes(self) -> int:
        """Bytes of this run not yet delivered (by this process)."""
        if self.storage is None or self.meta is None or self.storage.closed:
            return 0
        return self.storage.pending_bytes(self.meta.key)

    def idle(self) -> bool:
        """Whether nothing is left that can still be delivered."""
        return self.pending_bytes() == 0 or self.delivery.error is not None

    def flush(self, timeout: float) -> bool:
        """Wait until every record so far is delivered, or ``timeout`` seconds pass.

        Returns:
            Whether everything was delivered.
        """
        deadline = time.monotonic() + timeout
        self.courier.wake(self)
        with self._settled:
            while not self.idle():
                now = time.monotonic()
                if now >= deadline:
                    return False
                self._settled.wait(min(deadline - now, 0.2))
        return self.pending_bytes() == 0

    def settle(self) -> None:
        """Wake whoever waits in :meth:`flush`."""
        with self._settled:
            self._settled.notify_all()

    def full(self) -> bool:
        """Whether a batch is full or the spool needs compacting: deliver before the interval."""
        return self._needs_compaction or self.pending_bytes() >= WAKE_BYTES

    def due(self) -> bool:
        """Whether this spool has anything for the courier."""
        return self.pending_bytes() > 0 or self._needs_compaction

    # --- called by the courier ----------------------------------------------------------
    def deliver(self, pacer: Pacer, budget: int, *, full_only: bool = False) -> int:
        """Send what is pending, in order, until done, a failure, or ``budget`` requests.

        Args:
            pacer: The server's pacing.
            budget: Requests to make at most.
            full_only: Send full batches only (woken because one filled up): the rest
                waits for the flush interval or the run's end, so that a run logging
                fast sends as few requests as ``log_batch`` calls of the same points.

        Returns:
            Requests made.
        """
        storage, meta = self.storage, self.meta
        if storage is None or meta is None or storage.closed:
            return 0
        if self._needs_compaction:
            self._compact(storage, meta)
        made = 0
        while self.delivery.error is None and made < budget:
            rows = storage.read(meta.key, limit=pacer.window)
            if not rows or (full_only and len(rows) < pacer.window):
                break
            entries = [(seq, [kind, *body]) for seq, kind, body in rows]
            for unit in _delivery.units(entries, max_items=pacer.window):
                if self._must_wait(unit, storage):
                    return made
                made += 1
                if not self._send_unit(unit, pacer, storage, meta):
                    self.settle()
                    return made
            self.settle()
        if self.on_drained is not None and storage.pending_bytes(meta.key) == 0:
            self.on_drained(self)
        self.settle()
        return made

    def _must_wait(self, unit: Unit, storage: Storage) -> bool:
        """A final status waits for its children's records (the parent's is sent last)."""
        if unit.kind != "update" or unit.records[0][1] not in TERMINAL or not self.children:
            return False
        keys = [c.meta.key for c in self.children if c.meta is not None and c.storage is storage]
        return any(storage.pending_before(unit.seqs[0], key) for key in keys)

    def _send_unit(self, unit: Unit, pacer: Pacer, storage: Storage, meta: RunMeta) -> bool:
        try:
            pacer.send(lambda timeout: self._send(unit, timeout, storage, meta))
        except (Outage, Busy) as exc:
            self.delivery.outage = str(exc) if isinstance(exc, Outage) else None
            return False
        except Refused as exc:
            self.delivery.error = exc.error
            log.warning("run %s: %s; its records stay in %s", self.run_id, exc.error,
                        storage.path)  # fmt: skip
            return False
        self.delivery.outage = None
        self.delivery.sent += len(unit.records)
        self.courier.progressed(len(unit.records))
        if unit.kind == "update" and unit.records[0][1] in TERMINAL:
            self.terminal_sent = True
        return True

    def _send(self, unit: Unit, timeout: float, storage: Storage, meta: RunMeta) -> None:
        try:
            if unit.kind == "artifact":
                _delivery.upload(storage.files, unit.records[0])
                storage.discard(unit.records[0][1])
            else:
                _delivery.send(self.route, self.run_id, unit, timeout=timeout)
        except Invalid as exc:
            self._set_aside(unit, exc.reason, timeout, storage, meta)
            return
        storage.ack(meta.key, unit.seqs)

    def _set_aside(
        self, unit: Unit, reason: str, timeout: float, storage: Storage, meta: RunMeta
    ) -> None:
        """Find the records a refusal is about, keep them aside, deliver the rest."""
        if len(unit.records) == 1:
            self._check_run_usable(reason)
            storage.ack(meta.key, unit.seqs, reason=reason)
            self.delivery.rejected.append((unit.records[0], reason))
            if unit.kind == "artifact":
                storage.discard(unit.records[0][1])
            return
        for part in unit.split():
            self._send(part, timeout, storage, meta)

    def _check_run_usable(self, reason: str) -> None:
        """A refusal of the whole run (deleted meanwhile) is not about the records.

        Raises:
            Refused: The run is deleted on the server.
            Outage: The server did not answer the check.
        """
        run = _delivery.fetch_run(self.route, self.run_id)
        if run.info.lifecycle_stage == "deleted":
            raise Refused(
                TrackingError(
                    f"run {self.run_id} was deleted on the MLflow tracking server at "
                    f"{self.route.tracking_uri} while it was open, so it takes no more "
                    f"records ({reason})",
                    tracking_uri=self.route.tracking_uri,
                    run_id=self.run_id,
                    error_code="INVALID_STATE",
                    fix=f"restore it (mlflow runs restore --run-id {self.run_id}) to keep "
                    "what was logged since",
                )
            )

    def _compact(self, storage: Storage, meta: RunMeta) -> None:
        from michelangelo_mlflow._tags import SPOOL_DROPPED

        self._needs_compaction = False
        excess = storage.pending_bytes(meta.key) - self.max_bytes * 3 // 4
        dropped = storage.drop_oldest_metrics(meta.key, excess) if excess > 0 else 0
        if dropped:
            self.delivery.dropped += dropped
            # The run itself says how many points it lost (the last value wins).
            self.append([["t", SPOOL_DROPPED, str(self.delivery.dropped)]])

    # --- fork ---------------------------------------------------------------------------
    def forked(self) -> None:
        """In a forked child: become a worker spool of the child, sharing nothing."""
        self.storage = self.meta = None
        self.role = "worker"
        self.pid = _pid()
        self.closing = False
        self.children = []
        self.held = None
        self._settled = threading.Condition()
        self._direct = None
        self.delivery = Delivery()


class Courier:
    """The daemon thread that delivers every run spool of this process.

    Args:
        interval: Seconds between deliveries of a spool that has not filled a batch.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.delivered = 0
        """Records delivered by this process so far (progress, for waiting run ends)."""
        self._spools: list[RunSpool] = []
        self._pacers: dict[str, Pacer] = {}
        self._urgent: set[int] = set()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, spool: RunSpool) -> None:
        """Start delivering ``spool`` (starts the thread on first use)."""
        with self._condition:
            if spool not in self._spools:
                self._spools.append(spool)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="michelangelo-mlflow-courier", daemon=True
                )
                _signals.start_thread(self._thread)
            self._condition.notify()

    def remove(self, spool: RunSpool) -> None:
        """Stop delivering ``spool``."""
        with self._condition:
            if spool in self._spools:
                self._spools.remove(spool)

    def spools(self) -> list[RunSpool]:
        """The spools it delivers."""
        with self._condition:
            return list(self._spools)

    def pacer(self, route: Route) -> Pacer:
        """The pacing of one server, shared by every spool of this process sending there."""
        with self._condition:
            pacer = self._pacers.get(route.tracking_uri)
            if pacer is None:
                pacer = self._pacers[route.tracking_uri] = Pacer(route)
            return pacer

    def wake(self, spool: RunSpool | None = None) -> None:
        """Deliver now rather than at the next interval (``spool``: that one at once)."""
        with self._condition:
            if spool is not None:
                self._urgent.add(id(spool))
            self._condition.notify()

    def progressed(self, records: int) -> None:
        """Count records delivered."""
        with self._condition:
            self.delivered += records
            self._condition.notify_all()

    def _loop(self) -> None:
        due: dict[int, float] = {}
        seen: dict[int, tuple[int, int]] = {}  # pending bytes at the last look, holds in a row
        while True:
            with self._condition:
                if not self._urgent:  # a wake() during the last round is not lost
                    self._condition.wait(timeout=self._next_wait(due))
                spools = list(self._spools)
                urgent, self._urgent = self._urgent, set()
            now = time.monotonic()
            # A spool's first records wait an interval too: a run that logs fast fills
            # whole batches meanwhile instead of sending its first few points alone.
            due = {id(spool): due.get(id(spool), now + self.interval) for spool in spools}
            seen = {key: seen.get(key, (0, 0)) for key in due}
            for spool in spools:
                key = id(spool)
                pacer = self.pacer(spool.route)
                asked = key in urgent or spool.closing
                if not asked and due[key] <= now:
                    pending = spool.pending_bytes()
                    last, holds = seen[key]
                    if hold_for_full_batch(pending, last, holds):
                        seen[key] = (pending, holds + 1)
                        due[key] = now + self.interval
                    else:
                        asked = True
                if not (asked or spool.full()) or not spool.due() or not pacer.ready():
                    continue
                try:
                    spool.deliver(pacer, budget=16, full_only=not asked)
                except Exception:  # never let one run's bug stop the others' delivery
                    log.exception("delivering the records of run %s failed", spool.run_id)
                due[key] = time.monotonic() + self.interval
                seen[key] = (spool.pending_bytes(), 0 if asked else seen[key][1])

    def _next_wait(self, due: dict[int, float]) -> float:
        """Seconds until a spool is due, may retry, or (closing) should be looked at."""
        now = time.monotonic()
        waits = [self.interval]
        for spool in self._spools:
            if not spool.due():
                continue
            ready_at = self.pacer(spool.route).retry_at
            if ready_at > now:
                waits.append(ready_at - now)
            elif spool.closing or spool.full():
                waits.append(0.0)
            else:
                waits.append(due.get(id(spool), now) - now)
        return max(0.005, min(waits))


def hold_for_full_batch(pending: int, last: int, holds: int) -> bool:
    """Whether a spool due for delivery waits one more interval for a full batch.

    A run still being logged to waits, up to :data:`HOLD_INTERVALS` intervals in a
    row, rather than send a partial batch every interval; one that stopped growing is
    sent at once. Predicting from the last interval's growth whether a batch would
    fill in time failed where it mattered: 64 tasks logging at once on two cores log
    a few hundred points a second each, unevenly, and a third of their runs sent three
    or four requests for 2,000 points where two ``log_batch`` calls would do (64 tasks
    on PostgreSQL: 298 write requests against the baseline's 256; 259 with this rule).
    A slow logger's points thus reach the server every few intervals, not every one.

    Args:
        pending: Bytes of the run not yet delivered, now.
        last: Bytes not yet delivered an interval ago (after that look's delivery).
        holds: Intervals it has waited so far, in a row.
    """
    return holds < HOLD_INTERVALS and pending > last


def _raise_changed_param(run_id: str, key: str, known: str, value: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    raise MlflowException(
        f"Changing param values is not allowed. Param with key='{key}' was already logged "
        f"with value='{known}' for run ID='{run_id}'. Attempted logging new value '{value}'.",
        INVALID_PARAMETER_VALUE,
    )


def _pid() -> int:
    return os.getpid()


# --- this process's storages, courier and open runs (in STATE) ---------------------------
def courier(interval: float) -> Courier:
    """The process's courier, created on first use."""
    with STATE.lock:
        if STATE.courier is None:
            STATE.courier = Courier(interval)
        return STATE.courier


def storage_for(directory: Path) -> Storage:
    """This process's storage in ``directory``, created on first use."""
    with STATE.lock:
        storage = STATE.storages.get(directory)
        if storage is None or storage.closed:
            storage = STATE.storages[directory] = Storage.create(directory)
        return storage


def release_storage(directory: Path) -> None:
    """Let go of this process's storage in ``directory`` once no open run uses it.

    Its files are removed when everything was delivered; otherwise they stay as a
    leftover (its lock is free) for ``sync`` or the next run, and a later run of this
    process starts a storage of its own. Records kept in memory (the disk could not
    take them) keep the storage open: they have nowhere else to be.
    """
    with STATE.lock:
        storage = STATE.storages.get(directory)
        if storage is None:
            return
        busy = any(s.storage is storage for s in STATE.spools.values())
        if busy or storage.in_memory():
            return
        del STATE.storages[directory]
    storage.release(remove=storage.empty())


def open_run(
    directory: Path,
    route: Route,
    run_id: str,
    experiment_id: str,
    *,
    run: Run | None = None,
    role: Role,
    max_bytes: int,
    secrets: tuple[str, ...],
    interval: float,
) -> RunSpool:
    """Open the spool of a run in this process: from now on its records take the spool.

    The run's entry is written at once (so that ``sync`` can end an owner's run whose
    process was killed before it logged anything, and so that the run's owner knows a
    worker's storage for one of its own); its records come later.

    Args:
        directory: The spool directory.
        route: Where the run's records go.
        run_id: The run.
        experiment_id: The run's experiment.
        run: The run as the server returned it when it was created or resumed, if read.
        role: ``owner`` (sends the status) or ``worker`` (never does).
        max_bytes: The size cap of the run's undelivered records.
        secrets: Secret values to redact from params and tags.
        interval: Seconds between deliveries.

    Raises:
        ConfigurationError: The run is already open in this process.
    """
    with STATE.lock:
        known = STATE.spools.get(run_id)
        if known is not None and known.pid == _pid():
            raise ConfigurationError(
                f"run {run_id} is already open in this process (in another tracked run, "
                "worker_run or thread)",
                variable="run_id",
                fix="open a run once per process; share the open run instead of opening it again",
            )
        spool = RunSpool(
            None,
            None,
            route,
            run_id=run_id,
            experiment_id=experiment_id,
            directory=directory,
            role=role,
            run=run,
            max_bytes=max_bytes,
            secrets=secrets,
            interval=interval,
        )
        STATE.spools[run_id] = spool
    storage, meta = spool._storage()
    storage.persist_run(meta)
    return spool


def take_over(run_id: str) -> RunSpool | None:
    """The spool already open for ``run_id`` as a child run, now owned by its tracked run."""
    with STATE.lock:
        spool = STATE.spools.get(run_id)
        if spool is None or spool.pid != _pid():
            return None
        for parent in STATE.spools.values():
            if spool in parent.children:
                parent.children.remove(spool)
        spool.role = "owner"
        if spool.storage is not None:
            spool.meta = spool.storage.add_run(
                run_id, spool.route.tracking_uri, spool.experiment_id, "owner"
            )
        return spool


def open_child(parent: RunSpool, run: Run) -> RunSpool:
    """Open the spool of a run just created under ``parent``, on the same terms."""
    child = RunSpool(
        None,
        None,
        parent.route,
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        directory=parent.directory,
        role="child",
        run=run,
        max_bytes=parent.max_bytes,
        secrets=parent.secrets,
        interval=parent.interval,
    )
    with STATE.lock:
        STATE.spools[run.info.run_id] = child
        parent.children.append(child)
    return child


def after_fork_in_child() -> None:
    """Reset what a forked child inherited: never use a parent's lock, thread or file."""
    STATE.courier = None
    for storage in STATE.storages.values():
        abandon_after_fork(storage)
    STATE.storages = {}
    for spool in STATE.spools.values():
        spool.forked()


def progress_line(spools: list[RunSpool], rate: float) -> None:
    """One line on stderr: what is left to send, and at what rate."""
    pending = sum(spool.pending_bytes() for spool in spools)
    servers = sorted({spool.route.tracking_uri for spool in spools})
    sys.stderr.write(
        f"michelangelo-mlflow: {pending / 1024:.0f} KiB of {len(spools)} run(s) still to send to "
        f"{', '.join(servers)}, at {rate:.0f} records/s\n"
    )


os.register_at_fork(after_in_child=after_fork_in_child)
