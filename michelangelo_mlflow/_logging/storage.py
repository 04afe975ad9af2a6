"""The spool's storage: one SQLite database per writing process, in the spool directory.

Every record of an open tracked run is a row, inserted and committed before the
logging call returns (WAL mode, ``synchronous=NORMAL``: durable against SIGKILL of
the process once the commit returns; a power cut may lose the last commits). Rows
are deleted once the server acknowledged them, so a healthy run's database stays a
few pages however long it runs. A torn record cannot exist: a transaction is there
whole or not at all. A new database has 1 KiB pages: every commit writes at least a
page to the write-ahead log, and a call commits one small record.

Files, per writing process (``writer = <host>-<pid>-<random>``)::

    <spool>/<writer>.db      runs (where their records go; never a credential),
                             records (run, seq, kind, body), rejected (refused rows)
    <spool>/<writer>.lock    flock()ed while the writer lives: a free lock marks a leftover.
                             It lists the writer's runs, a ``<role> <run id>`` line each,
                             written before the run's row: a closing run finds other
                             processes' records of it by reading these small files
                             instead of opening every live writer's database
    <spool>/<writer>.files/  copies of artifacts logged while the server was down

Nothing is created before a run opens (an owner's entry is stored then, so that
``sync`` knows the run) or a forked child's first record, and a storage whose records were all
delivered removes its files when the process no longer needs it.

Each process writes only its own database: a forked child never uses its parent's
connection, lock or file (:func:`reset_after_fork` drops them; the child opens its
own on its first record), so processes never wait on each other's files.

When the database cannot be written (a full disk, a quota, a read-only or broken
file system) the records are kept in memory instead, in order after those on disk,
and the logging call still returns; a warning names the directory once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from michelangelo_mlflow import _signals

__all__ = [
    "SCHEMA_VERSION",
    "Damaged",
    "Role",
    "Row",
    "RunMeta",
    "Storage",
    "abandon_after_fork",
    "bytes_in",
    "leftover_paths",
    "writer_lives",
]

log = logging.getLogger("michelangelo_mlflow.spool")

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of a spool database; another version is left alone."""

Role = Literal["owner", "child", "worker"]
Row = tuple[int, str, Any]
"""``(seq, kind, body)``: one record; ``body`` is the decoded JSON list of its values."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key INTEGER PRIMARY KEY, run_id TEXT NOT NULL, tracking_uri TEXT NOT NULL,
    experiment_id TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL,
    UNIQUE (run_id, role));
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY, run INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY, run INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    reason TEXT NOT NULL);
"""

_CHECKPOINT_PAGES = 1000
"""Pages written to the write-ahead log after which the checkpointer thread copies them
(about 1 MiB of log). A checkpoint's cost is mostly fixed: every 100 pages, the
checkpoints took a tenth of the CPU of a run logging 2,000 points; every 1,000, about a
hundredth. A run delivered before then is never checkpointed: its files are removed."""

_AUTOCHECKPOINT_PAGES = 4000
"""Pages after which the writer checkpoints in its own commit, which bounds the log
however busy the machine is. The thread's checkpoints rarely let the log start over
while the writer keeps appending; the writer's own does (the log is then cut back to
:data:`_WAL_LIMIT`)."""

_PAGE_SIZE = 1024
"""Bytes of a page of a new spool database. A commit writes at least one page to the
write-ahead log, and a call commits one record of about 50 bytes: 1 KiB pages make that
commit about a fifth cheaper than SQLite's default 4 KiB (3 µs of 14)."""

_ROWS_A_PAGE = 16
"""About how many records fit a page: how many pages a commit of many records writes."""

_WAL_LIMIT = 1 << 20
"""Bytes the write-ahead log is cut back to after a checkpoint."""

_DISK_RETRY = 5.0
"""Seconds after a failed write before the disk is tried again (once memory is drained)."""

_ABANDONED: list[Any] = []
"""Connections inherited across fork: never used or closed (closing one would checkpoint
and delete the parent's write-ahead log), only kept from the garbage collector."""


class Damaged(Exception):
    """A spool database that cannot be read: what and why (reported by ``sync``)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class RunMeta:
    """Where one run's records in a storage go; holds no secret.

    Attributes:
        key: The run's key in this storage.
        run_id: The run.
        tracking_uri: The tracking URI without credentials, query or fragment.
        experiment_id: The run's experiment.
        role: ``owner`` (a tracked run: it sends the final status), ``child`` (a run
            nested under one, status included) or ``worker`` (a process logging to a
            run it does not own: never sends a final status).
    """

    key: int
    run_id: str
    tracking_uri: str
    experiment_id: str
    role: Role


class Storage:
    """One writer's spool database; thread-safe. Create with :meth:`create` or :meth:`adopt`.

    Args:
        directory: The spool directory.
        writer: The writer's name (the files' stem).
        lock_fd: The writer's lock, held while this object lives.
    """

    def __init__(self, directory: Path, writer: str, lock_fd: int | None) -> None:
        self.directory = directory
        self.writer = writer
        self.pid = os.getpid()
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._memory: list[tuple[int, int, str, str]] = []  # (seq, run, kind, body)
        self._memory_rejected: list[tuple[int, str, str, str]] = []
        self._memory_since = float("-inf")
        self._warned_disk = False
        self._stored_runs: set[int] = set()
        self._seq = 0
        self._pending: dict[int, int] = {}  # bytes not yet acknowledged, by run key
        self._floor: dict[int, int] = {}  # the last seq acknowledged, by run key
        self._runs: dict[int, RunMeta] = {}
        self._checkpointer = _Checkpointer(self.path)
        self._unchecked_pages = 0
        self._unlisted = False
        self._exclusive = False
        self.closed = False

    # --- life -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The database file."""
        return self.directory / f"{self.writer}.db"

    @property
    def files(self) -> Path:
        """Where artifacts kept for later upload are copied."""
        return self.directory / f"{self.writer}.files"

    @classmethod
    def create(cls, directory: Path) -> Storage:
        """A new storage for this process (its files appear with the first record)."""
        writer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        return cls(directory, writer, None)

    @classmethod
    def adopt(cls, path: Path) -> Storage | None:
        """Take over a leftover database for replay; ``None`` while its writer lives.

        Args:
            path: The ``<writer>.db`` file.

        Raises:
            Damaged: The file is not a readable spool database.
        """
        lock_fd = _lock(path.with_suffix(".lock"), blocking=False)
        if lock_fd is None:
            return None
        storage = cls(path.parent, path.stem, lock_fd)
        if not path.exists():  # removed by whoever held the lock before: leave no lock file
            with contextlib.suppress(OSError):
                path.with_suffix(".lock").unlink()
            storage.release(remove=False)
            return None
        try:
            storage._open(create=False)
        except (sqlite3.Error, OSError, Damaged) as exc:
            storage.release(remove=False)
            if isinstance(exc, Damaged):
                raise
            raise Damaged(path, f"{type(exc).__name__}: {exc}") from exc
        return storage

    def _open(self, *, create: bool) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._lock_fd is None:
                self._lock_fd = _lock(self.directory / f"{self.writer}.lock", blocking=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise Damaged(self.path, f"a spool database of another version ({version})")
            db.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # a no-op once the file has pages
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # Every commit appends a page to the write-ahead log. The checkpointer thread
            # copies them to the database every 1,000 pages (a checkpoint in the commit
            # would cost that logging call ~1 ms), and the log is cut back after, so that
            # a long run's files stay small.
            db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if not create:
                self._load(db)
            elif not self._read_by_others():
                # Nobody else reads this database while this process lives (see
                # _read_by_others): its connection keeps SQLite's locks instead of
                # taking and dropping them in every commit (six fcntl calls), which
                # makes a commit about 45% cheaper. The write-ahead log's index was
                # made in shared memory above, so that the locks can be let go again.
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
                self._exclusive = True
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _load(self, db: sqlite3.Connection) -> None:
        for key, run_id, uri, experiment, role in db.execute(
            "SELECT key, run_id, tracking_uri, experiment_id, role FROM runs"
        ):
            self._runs[key] = RunMeta(key, run_id, uri, experiment, role)
            self._stored_runs.add(key)
        for run, size in db.execute("SELECT run, SUM(LENGTH(body)) FROM records GROUP BY run"):
            self._pending[run] = int(size or 0)
        self._seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]

    def release(self, *, remove: bool) -> None:
        """Close the database and let go of the lock; ``remove`` deletes the files."""
        with self._mutex:
            if self.closed:
                return
            self.closed = True
            self._checkpointer.stop()
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            if remove:
                shutil.rmtree(self.files, ignore_errors=True)
                for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
                    with contextlib.suppress(OSError):
                        (self.directory / f"{self.writer}{suffix}").unlink()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if remove:
                with contextlib.suppress(OSError):
                    self.directory.rmdir()  # only when nobody else's files are left

    # --- runs -------------------------------------------------------------------------
    def add_run(self, run_id: str, tracking_uri: str, experiment_id: str, role: Role) -> RunMeta:
        """Register a run whose records this storage will hold (nothing is written yet)."""
        with self._mutex:
            for meta in self._runs.values():
                if meta.run_id == run_id and meta.role == role:
                    return meta
            key = max(self._runs, default=0) + 1
            meta = RunMeta(key, run_id, tracking_uri, experiment_id, role)
            self._runs[key] = meta
            self._pending.setdefault(key, 0)
            return meta

    def persist_run(self, meta: RunMeta) -> None:
        """Store a run's entry now, before any record, so ``sync`` knows the run.

        A run whose process is killed before it logged anything is then still found and
        ended KILLED. A disk that refuses it is no error: the run's records go to memory.
        """
        with self._mutex:
            if meta.key in self._stored_runs or self.closed:
                return
            try:
                db = self._open(create=True)
                with _transaction(db):
                    self._insert_run(db, meta)
            except (sqlite3.Error, OSError) as exc:
                self._to_memory(exc)
                return
            self._stored_runs.add(meta.key)

    def runs(self) -> list[RunMeta]:
        """The runs this storage holds records of."""
        with self._mutex:
            return list(self._runs.values())

    def _read_by_others(self) -> bool:
        """Whether another process may read this database while this one lives.

        A run's end in another process reads the records a *worker* holds of its runs
        (a forked child's, a Ray worker's: see ``closing.py``); an owner's or a
        child run's records are nobody else's business until this process is gone
        (``sync`` and the next run read leftovers, once the writer's lock is free).
        A run list that could not be written leaves readers only the database.
        """
        return self._unlisted or any(meta.role == "worker" for meta in self._runs.values())

    def _insert_run(self, db: sqlite3.Connection, meta: RunMeta) -> None:
        self._list_run(meta)
        if self._exclusive and self._read_by_others():
            db.execute("PRAGMA locking_mode=NORMAL")  # the locks go with the next access
            self._exclusive = False
        db.execute(
            "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
            (meta.key, meta.run_id, meta.tracking_uri, meta.experiment_id, meta.role, time.time()),
        )

    def _list_run(self, meta: RunMeta) -> None:
        """Add the run to the lock file's list, before its row (see :func:`runs_in`)."""
        if self._lock_fd is None or self._unlisted:
            return
        try:
            os.lseek(self._lock_fd, 0, os.SEEK_END)
            os.write(self._lock_fd, f"{meta.role} {meta.run_id}\n".encode())
        except OSError:
            # A list missing a run must not be taken for complete: an empty one is
            # not (readers then read the database), so it stays empty from now on.
            self._unlisted = True
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)

    # --- writing ----------------------------------------------------------------------
    def append(self, run: int, records: list[tuple[str, str]]) -> int:
        """Store ``(kind, body)`` records of a run, in one transaction; never raises OSError.

        Returns:
            The run's bytes not yet acknowledged.
        """
        with self._mutex:
            if self.closed:
                raise ValueError(f"the spool {self.path} is closed")
            seq = self._seq
            rows = [(seq + i, run, kind, body) for i, (kind, body) in enumerate(records, 1)]
            self._seq = seq + len(rows)
            # Once in memory, stay there until it drains: records keep their order.
            on_disk = not self._memory and time.monotonic() - self._memory_since > _DISK_RETRY
            if not on_disk or not self._write(rows):
                self._memory.extend(rows)
            pending = self._pending.get(run, 0)
            for _, body in records:
                pending += len(body)
            self._pending[run] = pending
            return pending

    def append_one(self, run: int, kind: str, body: str) -> int:
        """:meth:`append` of one record, the logging call's usual case, in fewer steps."""
        with self._mutex:
            if self.closed:
                raise ValueError(f"the spool {self.path} is closed")
            seq = self._seq = self._seq + 1
            row = (seq, run, kind, body)
            if self._memory or time.monotonic() - self._memory_since <= _DISK_RETRY:
                self._memory.append(row)  # once in memory, stay there until it drains
            elif not self._write([row]):
                self._memory.append(row)
            pending = self._pending[run] = self._pending.get(run, 0) + len(body)
            return pending

    def _write(self, rows: list[tuple[int, int, str, str]]) -> bool:
        try:
            db = self._open(create=True)
            if len(rows) == 1 and rows[0][1] in self._stored_runs:
                # One statement outside BEGIN is its own transaction (autocommit): as
                # atomic and durable as BEGIN ... COMMIT, with one call into SQLite (one
                # release of the GIL, one chance to lose it to the courier) instead of three.
                db.execute("INSERT INTO records VALUES (?, ?, ?, ?)", rows[0])
            else:
                with _transaction(db):
                    if rows[0][1] not in self._stored_runs:
                        self._insert_run(db, self._runs[rows[0][1]])
                        self._stored_runs.add(rows[0][1])
                    db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
        except (sqlite3.Error, OSError) as exc:
            self._to_memory(exc)
            return False
        self._unchecked_pages += 1 + len(rows) // _ROWS_A_PAGE
        if self._unchecked_pages >= _CHECKPOINT_PAGES:
            self._checkpoint_soon()
        return True

    def _checkpoint_soon(self) -> None:
        self._unchecked_pages = 0
        if not self._exclusive:  # the thread's connection cannot use a locked database:
            self._checkpointer.request()  # the writer's own checkpoint bounds the log

    def _to_memory(self, exc: BaseException) -> None:
        self._memory_since = time.monotonic()
        if not self._warned_disk:
            self._warned_disk = True
            log.warning(
                "the spool in %s cannot be written (%s: %s); records are kept in memory "
                "and sent from there (they do not survive the process being killed) until "
                "it can; free space there or point MICHELANGELO_MLFLOW_SPOOL_DIR elsewhere",
                self.directory, type(exc).__name__, exc,
            )  # fmt: skip

    def keep(self, local: Path) -> str:
        """Copy a file or directory under :attr:`files`; returns its path relative to it."""
        relative = Path(secrets.token_hex(8)) / local.name
        target = self.files / relative
        target.parent.mkdir(parents=True)
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copy2(local, target)
        return str(relative)

    def discard(self, relative: str) -> None:
        """Delete a kept artifact's copy once uploaded (never a file the user left in place)."""
        if Path(relative).is_absolute():
            return
        shutil.rmtree((self.files / relative).parent, ignore_errors=True)

    # --- reading and acknowledging ------------------------------------------------------
    def read(self, run: int, limit: int) -> list[Row]:
        """The run's oldest records not yet acknowledged, at most ``limit`` of them."""
        with self._mutex:
            rows: list[tuple[int, str, str]] = []
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    rows = self._db.execute(
                        "SELECT seq, kind, body FROM records WHERE run = ? AND seq > ? "
                        "ORDER BY seq LIMIT ?",
                        (run, self._floor.get(run, 0), limit),
                    ).fetchall()
            if len(rows) < limit:
                rows += [(s, k, b) for s, r, k, b in self._memory if r == run][: limit - len(rows)]
        if not rows:
            return []
        # One decode for the whole batch (a list of the bodies) rather than one a row.
        bodies = json.loads(f"[{','.join(body for _, _, body in rows)}]")
        return [(seq, kind, body) for (seq, kind, _), body in zip(rows, bodies, strict=True)]

    def ack(self, run: int, seqs: list[int], *, reason: str | None = None) -> None:
        """Forget records the server took (or, with ``reason``, refused: kept aside).

        Records of a run are acknowledged in order, so everything up to the highest
        ``seq`` is done: it is never read again, even when the disk refuses the delete
        (a full disk can), which is then tried again with the next acknowledgement.
        """
        if not seqs:
            return
        with self._mutex:
            low, high = min(seqs), max(seqs)
            self._floor[run] = max(self._floor.get(run, 0), high)
            kept, freed = [], 0
            for row in self._memory:
                if row[1] == run and low <= row[0] <= high:
                    freed += len(row[3])
                    if reason is not None:
                        self._memory_rejected.append((row[1], row[2], row[3], reason))
                else:
                    kept.append(row)
            self._memory = kept
            if self._db is not None:
                freed += self._delete(run, low, high, reason)
            self._pending[run] = max(0, self._pending.get(run, 0) - freed)

    def _delete(self, run: int, low: int, high: int, reason: str | None) -> int:
        """Delete acknowledged rows; the bytes the range held (deleted now or later)."""
        assert self._db is not None
        where = "run = ? AND seq BETWEEN ? AND ?"
        try:
            freed = self._db.execute(
                f"SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records WHERE {where}",
                (run, low, high),
            ).fetchone()[0]
            rejected = (
                self._db.execute(
                    f"SELECT kind, body FROM records WHERE {where}", (run, low, high)
                ).fetchall()
                if reason is not None
                else []
            )
        except sqlite3.Error:
            return 0
        try:
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT OR IGNORE INTO rejected VALUES (?, ?, ?, ?, ?)",
                    [(low + i, run, kind, body, reason) for i, (kind, body) in enumerate(rejected)],
                )
                self._db.execute(
                    "DELETE FROM records WHERE run = ? AND seq <= ?", (run, self._floor[run])
                )
        except sqlite3.Error as exc:  # a full disk can refuse even a delete: tried again later
            self._memory_rejected += [(run, kind, body, str(reason)) for kind, body in rejected]
            self._to_memory(exc)
        return int(freed)

    def drop_oldest_metrics(self, run: int, excess: int) -> int:
        """Delete the run's oldest metric points until ``excess`` bytes are freed.

        Returns:
            How many points were dropped (params, tags and statuses never are).
        """
        dropped = 0
        with self._mutex:
            kept = []
            for row in self._memory:
                if excess > 0 and row[1] == run and row[2] == "m":
                    excess -= len(row[3])
                    self._pending[run] -= len(row[3])
                    dropped += 1
                else:
                    kept.append(row)
            self._memory = kept
            if excess > 0 and self._db is not None:
                dropped += self._drop_on_disk(run, excess)
        return dropped

    def _drop_on_disk(self, run: int, excess: int) -> int:
        assert self._db is not None
        try:
            with _transaction(self._db):
                rows = self._db.execute(
                    "SELECT seq, LENGTH(body) FROM records WHERE run = ? AND kind = 'm' "
                    "ORDER BY seq",
                    (run,),
                )
                doomed: list[tuple[int]] = []
                for seq, size in rows:
                    if excess <= 0:
                        break
                    doomed.append((seq,))
                    excess -= size
                    self._pending[run] -= size
                self._db.executemany("DELETE FROM records WHERE seq = ?", doomed)
        except sqlite3.Error as exc:
            self._to_memory(exc)
            return 0
        return len(doomed)

    def pending_bytes(self, run: int | None = None) -> int:
        """Bytes not yet acknowledged, of one run or of all."""
        with self._mutex:
            if run is not None:
                return self._pending.get(run, 0)
            return sum(self._pending.values())

    def pending_before(self, seq: int, run: int) -> bool:
        """Whether records of ``run`` stored before ``seq`` are still pending."""
        with self._mutex:
            if any(s < seq and r == run for s, r, _, _ in self._memory):
                return True
            if self._db is None:
                return False
            with contextlib.suppress(sqlite3.Error):
                found = self._db.execute(
                    "SELECT 1 FROM records WHERE run = ? AND seq > ? AND seq < ? LIMIT 1",
                    (run, self._floor.get(run, 0), seq),
                ).fetchone()
                return found is not None
            return False

    def rejected(self, run: int) -> list[tuple[str, Any, str]]:
        """The run's records the server refused: ``(kind, body, reason)``."""
        with self._mutex:
            found: list[tuple[str, str, str]] = []
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    found = self._db.execute(
                        "SELECT kind, body, reason FROM rejected WHERE run = ? ORDER BY seq", (run,)
                    ).fetchall()
            found += [(k, b, why) for r, k, b, why in self._memory_rejected if r == run]
        return [(kind, json.loads(body), reason) for kind, body, reason in found]

    def in_memory(self) -> bool:
        """Whether records wait in memory (the disk could not take them)."""
        with self._mutex:
            return bool(self._memory)

    def empty(self) -> bool:
        """Whether nothing is left to deliver (refused records aside)."""
        with self._mutex:
            return not self._memory and not any(self._pending.values())


def count_for(path: Path, run_ids: Collection[str]) -> int:
    """Records of ``run_ids`` in a database another process may be writing (read-only)."""
    if not run_ids:
        return 0
    marks = ", ".join("?" * len(run_ids))
    found = _read_only(
        path,
        "SELECT COUNT(*) FROM records JOIN runs ON runs.key = records.run "
        f"WHERE runs.run_id IN ({marks})",
        tuple(run_ids),
    )
    return int(found[0][0]) if found else 0


def bytes_in(path: Path) -> int:
    """Bytes of records not yet delivered in a database another process may have written."""
    found = _read_only(path, "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records", ())
    return int(found[0][0]) if found else 0


def runs_in(path: Path) -> list[tuple[str, str]]:
    """``(run id, role)`` of each run in a database another process may be writing.

    Read from its writer's lock file, which lists each run before the database holds
    it; from the database itself when the list is empty (a writer of an earlier
    release, or one whose list could not be written). 64 processes sharing a spool
    directory close their runs without opening each other's databases.
    """
    listed = _listed_runs(path.with_suffix(".lock"))
    if listed:
        return listed
    # Not waiting: a new writer's database, locked between its creation and its first
    # run's line, holds none of anyone else's runs.
    return [(str(run_id), str(role)) for run_id, role in _read_only(
        path, "SELECT run_id, role FROM runs", (), timeout=0.0
    )]  # fmt: skip


def _listed_runs(lock: Path) -> list[tuple[str, str]]:
    try:
        with open(lock, "rb") as file:
            text = file.read().decode(errors="replace")
    except OSError:
        return []
    runs = []
    for line in text.split("\n")[:-1]:  # a last line without its newline is being written
        role, _, run_id = line.partition(" ")
        if run_id:
            runs.append((run_id, role))
    return runs


def writer_lives(path: Path) -> bool:
    """Whether the process that writes the database ``path`` still holds its lock.

    Probed with a shared lock, let go at once: an adopter's exclusive one, taken
    meanwhile, would fail and try again later, as it does for a live writer.
    """
    try:
        fd = os.open(path.with_suffix(".lock"), os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody can hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _read_only(
    path: Path, query: str, args: tuple[str, ...], *, timeout: float = 1.0
) -> list[tuple[Any, ...]]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    except sqlite3.Error:
        return []
    try:
        return db.execute(query, args).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
        if not path.exists():
            # Its writer removed it while this connection had it open, which may have
            # made a write-ahead log and index of its own after the writer's were gone:
            # they are nobody's (a name is never used again), so they go too.
            for side in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{side}")


def leftover_paths(directory: Path) -> Iterator[Path]:
    """The spool databases under ``directory``, oldest first (live ones included)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    dated = []
    for entry in entries:
        if entry.name.endswith(".db"):
            try:
                dated.append((entry.stat().st_mtime, Path(entry.path)))
            except OSError:
                continue  # removed meanwhile by its writer
    yield from (path for _, path in sorted(dated))


def abandon_after_fork(storage: Storage) -> None:
    """In a forked child: never touch the parent's connection, lock or counters again."""
    if storage._db is not None:
        _ABANDONED.append(storage._db)
    storage._db = None
    storage._checkpointer.abandon_after_fork()
    if storage._lock_fd is not None:
        os.close(storage._lock_fd)  # the parent's flock stays: it holds the same lock
        storage._lock_fd = None
    storage._mutex = threading.Lock()
    storage.closed = True


class _Checkpointer:
    """Copies a database's write-ahead log into it on a thread of its own.

    A checkpoint runs in SQLite with the GIL released, beside the writer (WAL lets a
    passive checkpoint and a commit run at once), so the logging call never pays for it.
    The thread starts with the first request and ends with :meth:`stop`.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._lock = threading.Lock()  # the connection's; never held by a logging call
        self._db: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def request(self) -> None:
        """Checkpoint soon (called by the writer, under the storage's mutex)."""
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(
                target=self._loop, name="michelangelo-mlflow-checkpoint", daemon=True
            )
            _signals.start_thread(self._thread)
        self._wanted.set()

    def stop(self) -> None:
        """End the thread and close its connection (before the files may be removed)."""
        with self._lock:
            self._stopped = True
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
        self._wanted.set()

    def abandon_after_fork(self) -> None:
        """In a forked child: the thread is gone; never use the parent's connection."""
        if self._db is not None:
            _ABANDONED.append(self._db)
        self._db, self._thread, self._stopped = None, None, True
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self._lock:
                if self._stopped:
                    return
                try:
                    if self._db is None:
                        self._db = sqlite3.connect(
                            self._path, isolation_level=None, check_same_thread=False
                        )
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # the writer's own autocheckpoint still bounds the log


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _lock(path: Path, *, blocking: bool) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
