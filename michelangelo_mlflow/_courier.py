"""The one logging path: run spools, and the courier thread that empties them.

While a tracked run is open, every metric, param, tag and status of it goes to its
:class:`RunSpool` (by way of this SDK's tracking store, whatever called MLflow): the
record is appended to the run's segment on disk and the call returns. The
:class:`Courier`, one daemon thread per process, sends the records in order and in
batches, every ``flush_interval`` seconds or as soon as a batch is full; when the
server does not answer it keeps them and tries again with backoff, so an outage
costs the task nothing but disk.

A run spool also answers for its run when the server cannot: which params are set
(so that changing one is refused at once, as the server would), and the run as last
seen plus what was logged since (so ``mlflow.get_run`` inside a run keeps working
during an outage).

Leftover segments, of processes that ended before their records were delivered,
are replayed by the same machinery: in the background by the next tracked run on the
same server, or by ``michelangelo-mlflow sync``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from michelangelo_mlflow import _delivery
from michelangelo_mlflow._delivery import Invalid, Outage, Refused, Route, Unit
from michelangelo_mlflow._params import redact_value
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._spool import Record, Role, Segment, SegmentMeta
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
    "close_run",
    "open_child",
    "open_run",
    "take_over",
]

log = logging.getLogger("michelangelo_mlflow.spool")

TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
"""Run statuses that end a run."""

WAKE_BYTES = 64 * 1024
"""Pending bytes (about a full batch of metric points) that wake the courier early."""

PROGRESS_CAP = 10
"""A run end waits at most this many graces in all while the server keeps taking records."""

_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 5.0
_BACKOFF_MAX_CLOSING = 1.0


@dataclass
class Delivery:
    """What became of a run spool's records; the outcome of :meth:`RunSpool.close`.

    Attributes:
        delivered: Whether every record reached the server.
        sent: Records the server took.
        pending_bytes: Bytes still in the spool.
        dropped: Metric points dropped at the size cap.
        rejected: Records the server refused as invalid, with its reason.
        error: The typed error that stopped delivery (credentials, unknown run …).
        outage: Why the server did not take the rest, when it was an outage.
        path: The segment's directory.
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
    """One run's records in this process: spooled on disk, delivered by the courier.

    Args:
        segment: The run's segment (live, or a leftover to replay).
        route: Where its records go.
        courier: The courier that delivers them.
        run: The run as the server last returned it (``None`` for a leftover).
        max_bytes: Pending bytes above which the oldest metric points are dropped.
        secrets: Secret values redacted from every param and tag, whoever logs them.
        on_drained: Called by the courier when a leftover's records are all delivered.
    """

    def __init__(
        self,
        segment: Segment,
        route: Route,
        courier: Courier,
        *,
        run: Run | None = None,
        max_bytes: int = 1 << 30,
        secrets: tuple[str, ...] = (),
        on_drained: Callable[[RunSpool], None] | None = None,
    ) -> None:
        self.segment = segment
        self.route = route
        self.courier = courier
        self.run_id = segment.meta.run_id
        self.max_bytes = max_bytes
        self.secrets = secrets
        self.on_drained = on_drained
        self.run = run
        self.params: dict[str, str] = dict(run.data.params) if run is not None else {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, tuple[float, int, int]] = {}
        self.status: str | None = None
        self.closing = False
        self.delivery = Delivery(path=segment.path)
        self.terminal_sent = False
        self.status_appended = False
        self.retry_at = 0.0
        self._failures = 0
        self._warned_cap = False
        self._needs_compaction = False
        self._settled = threading.Condition()
        self._direct: Any = None
        self.children: list[RunSpool] = []

    # --- the logging path (any thread) -------------------------------------------------
    def log(
        self,
        metrics: Iterable[Any] = (),
        params: Iterable[Any] = (),
        tags: Iterable[Any] = (),
    ) -> None:
        """Spool MLflow ``Metric``, ``Param`` and ``RunTag`` entities; returns once on disk.

        Params and tags are redacted on the way in (a secret-looking key, a configured
        secret, a URL's password), whoever logs them: the spool and the server never
        hold a secret.

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
        for metric in metrics:
            extra = _metric_extra(metric)
            record: Record = ["m", metric.key, metric.value, metric.timestamp, metric.step]
            if extra:
                record.append(extra)
            records.append(record)
        records.extend(["t", t.key, redact_value(t.key, str(t.value), self.secrets)] for t in tags)
        if records:
            self.append(records)

    def delete_tag(self, key: str) -> None:
        """Spool the deletion of a tag."""
        self.append([["d", key]])

    def keep_artifact(self, local: str, artifact_path: str | None, repository: str) -> Path:
        """Copy a file or directory into the spool, to upload when the server answers again.

        Args:
            local: The file or directory the user logged.
            artifact_path: Where in the run's artifacts it goes.
            repository: The artifact repository URI it was meant for.

        Returns:
            Where the copy is kept.
        """
        copy = self.segment.keep(Path(local))
        self.append([["a", str(copy.relative_to(self.segment.path)), artifact_path, repository]])
        return copy

    def update(self, status: str | None, end_time: int | None, run_name: str | None) -> None:
        """Spool a run update: its status (a terminal one ends the run) or name."""
        self.append([["u", status, end_time, run_name]])

    def append(self, records: list[Record]) -> None:
        """Write records to the segment, remember what they set, and nudge the courier."""
        written, pending = self.segment.append(records)
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
        if pending > self.max_bytes:
            self._over_cap()
        elif pending >= WAKE_BYTES > pending - written:
            self.courier.wake()  # once, when a batch fills up: not on every call after

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
        except Outage as exc:
            self._failed(str(exc))
            return None
        except Refused as exc:
            raise exc.error from exc.__cause__
        self.run = run
        return run

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the run's server answers a quick ``/health`` now (and no outage is known).

        Checked before a call that would otherwise wait out MLflow's retries.
        """
        if self.outage_now():
            return False
        try:
            _delivery.health(self.route, timeout)
        except Outage as exc:
            self._failed(str(exc))
            return False
        return True

    def outage_now(self) -> bool:
        """Whether the last attempt to reach the server failed and none has succeeded since."""
        return self.delivery.outage is not None

    def direct_store(self) -> Any:
        """MLflow's REST store for this run's server and credentials, for calls not spooled."""
        if self._direct is None:
            from michelangelo_mlflow._store import direct_store

            self._direct = direct_store(self.route.host_creds, databricks=self.route.databricks)
        return self._direct

    # --- the end ------------------------------------------------------------------------
    def flush(self, timeout: float, *, while_progressing: bool = False) -> bool:
        """Wait until every record so far is delivered, or ``timeout`` seconds pass.

        Args:
            timeout: Seconds to wait; with ``while_progressing``, seconds to wait
                without any record being delivered (at most ``PROGRESS_CAP`` times as
                long in all).
            while_progressing: Keep waiting as long as the server takes records.

        Returns:
            Whether everything was delivered.
        """
        start = time.monotonic()
        deadline = start + timeout
        cap = start + timeout * (PROGRESS_CAP if while_progressing else 1)
        sent = self.delivery.sent
        self.courier.wake(self)
        with self._settled:
            while not self._idle():
                now = time.monotonic()
                if while_progressing and self.delivery.sent > sent:
                    sent, deadline = self.delivery.sent, min(cap, now + timeout)
                if now >= deadline:
                    return False
                self._settled.wait(min(deadline - now, 0.5))
        return self.segment.pending_bytes == 0

    def close(self, grace: float) -> Delivery:
        """Deliver the rest, then let go of the segment.

        It waits as long as the server takes records, and gives up after ``grace``
        seconds in which it took none (or ``PROGRESS_CAP`` graces in all). The segment
        is removed when everything was delivered, and kept (for ``sync`` or the next
        run) otherwise.

        Returns:
            What became of the records.
        """
        self.closing = True
        self.retry_at = 0.0
        self.flush(grace, while_progressing=True)
        self.courier.remove(self)
        self.delivery.pending_bytes = self.segment.pending_bytes
        self.delivery.delivered = self.delivery.pending_bytes == 0
        self.segment.close(remove=self.delivery.delivered)
        return self.delivery

    def full(self) -> bool:
        """Whether a batch is full or the spool needs compacting: deliver before the interval."""
        return self._needs_compaction or self.segment.pending_bytes >= WAKE_BYTES

    def _idle(self) -> bool:
        return self.segment.pending_bytes == 0 or self.delivery.error is not None

    def _settle(self) -> None:
        with self._settled:
            self._settled.notify_all()

    # --- called by the courier ----------------------------------------------------------
    def deliver(self) -> None:
        """Send what is pending, in order, until done, an outage or a refusal."""
        if self._needs_compaction:
            self._compact()
        while self.delivery.error is None:
            generation, entries = self.segment.read()
            if not entries:
                break
            for unit in _delivery.units(entries):
                try:
                    self._send(unit)
                except Outage as exc:
                    self._failed(str(exc))
                    return
                except Refused as exc:
                    self.delivery.error = exc.error
                    log.warning("run %s: %s; its records stay in %s", self.run_id, exc.error,
                                self.segment.path)  # fmt: skip
                    return
                self.delivery.sent += len(unit.records)
                if unit.kind == "update" and unit.records[0][1] in TERMINAL:
                    self.terminal_sent = True
                if not self.segment.ack(generation, unit.end):
                    break  # the file was compacted meanwhile: read again
            self._recovered()
        self._settle()
        if self.on_drained is not None and self.segment.pending_bytes == 0:
            self.on_drained(self)

    def _send(self, unit: Unit, *, checked: bool = False) -> None:
        if unit.kind == "artifact":
            _delivery.upload(self.segment.path, unit.records[0])
            self.segment.discard(unit.records[0][1])
            return
        try:
            _delivery.send(self.route, self.run_id, unit)
        except Invalid as exc:
            if not checked:
                self._check_run_usable(exc.reason)
            if len(unit.records) == 1:
                self.segment.reject(unit.records, exc.reason)
                self.delivery.rejected.append((unit.records[0], exc.reason))
                return
            half = len(unit.records) // 2  # find the records concerned, keep the others
            for part in (unit.records[:half], unit.records[half:]):
                self._send(Unit(unit.kind, part, unit.end), checked=True)

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

    def _failed(self, reason: str) -> None:
        if self.delivery.outage is None:
            log.warning(
                "the MLflow tracking server at %s is not taking records of run %s (%s); "
                "they are kept in %s and sent when it answers again",
                self.route.tracking_uri, self.run_id, reason, self.segment.path,
            )  # fmt: skip
        self.delivery.outage = reason
        self._failures += 1
        ceiling = _BACKOFF_MAX_CLOSING if self.closing else _BACKOFF_MAX
        delay = min(ceiling, _BACKOFF_FIRST * 2 ** (self._failures - 1))
        self.retry_at = time.monotonic() + delay * (0.5 + random.random() / 2)
        self._settle()

    def _recovered(self) -> None:
        if self.delivery.outage is not None:
            log.warning(
                "the MLflow tracking server at %s answers again; sending the records of run "
                "%s kept meanwhile",
                self.route.tracking_uri,
                self.run_id,
            )
        self.delivery.outage = None
        self._failures = 0
        self.retry_at = 0.0

    def _compact(self) -> None:
        from michelangelo_mlflow._tags import SPOOL_DROPPED

        self._needs_compaction = False
        dropped, _ = self.segment.compact(keep=self.max_bytes * 3 // 4)
        if dropped:
            self.delivery.dropped += dropped
            # The run itself says how many points it lost (the last value wins).
            self.segment.append([["t", SPOOL_DROPPED, str(self.delivery.dropped)]])


class Courier:
    """The daemon thread that delivers every run spool of this process.

    Args:
        interval: Seconds between deliveries of a spool that has not filled a batch.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._spools: list[RunSpool] = []
        self._urgent: set[int] = set()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, spool: RunSpool) -> None:
        """Start delivering ``spool`` (starts the thread on first use)."""
        with self._condition:
            self._spools.append(spool)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="michelangelo-mlflow-courier", daemon=True
                )
                self._thread.start()
            self._condition.notify()

    def remove(self, spool: RunSpool) -> None:
        """Stop delivering ``spool`` (a delivery in progress finds its segment closed)."""
        with self._condition:
            if spool in self._spools:
                self._spools.remove(spool)

    def wake(self, spool: RunSpool | None = None) -> None:
        """Deliver now rather than at the next interval (``spool``: that one at once)."""
        with self._condition:
            if spool is not None:
                self._urgent.add(id(spool))
            self._condition.notify()

    def _loop(self) -> None:
        due: dict[int, float] = {}
        while True:
            with self._condition:
                if not self._urgent:  # a wake() during the last round is not lost
                    self._condition.wait(timeout=self._next_wait(due))
                spools = list(self._spools)
                urgent, self._urgent = self._urgent, set()
            now = time.monotonic()
            due = {id(spool): due.get(id(spool), now) for spool in spools}
            for spool in spools:
                key = id(spool)
                if spool.retry_at > now or not (
                    key in urgent or spool.closing or due[key] <= now or spool.full()
                ):
                    continue
                try:
                    spool.deliver()
                except Exception:  # never let one run's bug stop the others' delivery
                    log.exception("delivering the records of run %s failed", spool.run_id)
                due[key] = time.monotonic() + self.interval

    def _next_wait(self, due: dict[int, float]) -> float:
        """Seconds until a spool is due, may retry, or (closing) should be looked at."""
        now = time.monotonic()
        waits = [self.interval]
        for spool in self._spools:
            if spool.retry_at > now:
                waits.append(spool.retry_at - now)
            elif spool.closing:
                waits.append(0.05)
            elif spool.segment.pending_bytes:
                waits.append(due.get(id(spool), now) - now)
        return max(0.01, min(waits))


def _metric_extra(metric: Any) -> dict[str, str]:
    extra = {}
    for name in ("model_id", "dataset_name", "dataset_digest"):
        value = getattr(metric, name, None)
        if value:
            extra[name] = value
    return extra


def _raise_changed_param(run_id: str, key: str, known: str, value: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    raise MlflowException(
        f"Changing param values is not allowed. Param with key='{key}' was already logged "
        f"with value='{known}' for run ID='{run_id}'. Attempted logging new value '{value}'.",
        INVALID_PARAMETER_VALUE,
    )


# --- the registry of open runs (in STATE) -------------------------------------------------
def courier(interval: float) -> Courier:
    """The process's courier, created on first use."""
    with STATE.lock:
        if STATE.courier is None:
            STATE.courier = Courier(interval)
        return STATE.courier


def open_run(
    directory: Path, route: Route, run: Run, *, role: Role, settings: Settings
) -> RunSpool:
    """Open the spool of a run in this process: from now on its records take the spool.

    Args:
        directory: The spool directory.
        route: Where the run's records go.
        run: The run as the server returned it when it was created or resumed.
        role: ``owner`` (sends the status) or ``worker`` (never does).
        settings: Supplies the size cap, the flush interval and the secrets to redact.

    Raises:
        OSError: The spool directory cannot be written.
        ConfigurationError: The run is already open in this process.
    """
    run_id = run.info.run_id
    meta = SegmentMeta.for_this_process(route.tracking_uri, run_id, run.info.experiment_id, role)
    with STATE.lock:
        if run_id in STATE.spools:
            raise ConfigurationError(
                f"run {run_id} is already open in this process (in another tracked run, "
                "worker_run or thread)",
                variable="run_id",
                fix="open a run once per process; share the open run instead of opening it again",
            )
        segment = Segment.create(directory, meta)
        spool = RunSpool(
            segment,
            route,
            courier(settings.flush_interval),
            run=run,
            max_bytes=int(settings.spool_max_bytes),
            secrets=settings.secret_values(),
        )
        STATE.spools[run_id] = spool
    spool.courier.add(spool)
    return spool


def take_over(run_id: str) -> RunSpool | None:
    """The spool already open for ``run_id`` as a child run, detached from its parent.

    A tracked run nested under another is created as a child (by the store), then
    owns its spool: it closes it itself.
    """
    with STATE.lock:
        spool = STATE.spools.get(run_id)
        if spool is None:
            return None
        for parent in STATE.spools.values():
            if spool in parent.children:
                parent.children.remove(spool)
        return spool


def open_child(parent: RunSpool, run: Run) -> RunSpool:
    """Open the spool of a run just created under ``parent``, on the same terms."""
    meta = SegmentMeta.for_this_process(
        parent.route.tracking_uri, run.info.run_id, run.info.experiment_id, "child"
    )
    segment = Segment.create(parent.segment.path.parent.parent, meta)
    child = RunSpool(
        segment,
        parent.route,
        parent.courier,
        run=run,
        max_bytes=parent.max_bytes,
        secrets=parent.secrets,
    )
    with STATE.lock:
        STATE.spools[run.info.run_id] = child
        parent.children.append(child)
    child.courier.add(child)
    return child


def close_run(spool: RunSpool, grace: float) -> list[Delivery]:
    """Close a run's spool and its children's within ``grace`` seconds in all.

    Returns:
        What became of each spool's records, the run's own last.
    """
    deadline = time.monotonic() + grace
    outcomes: list[Delivery] = []
    for child in list(spool.children):
        outcomes += close_run(child, max(0.0, deadline - time.monotonic()))
    with STATE.lock:
        if STATE.spools.get(spool.run_id) is spool:
            del STATE.spools[spool.run_id]
    outcomes.append(spool.close(max(0.0, deadline - time.monotonic())))
    return outcomes
