"""The write-ahead spool: every record of a tracked run is on disk before a call returns.

One *segment* per run and writing process, under the spool directory::

    <spool>/<run_id>/<writer>/      writer = <host>-<pid>-<random>
        meta.json       where the run lives: tracking URI (never credentials), run and
                        experiment ids, role (owner, child or worker), host, pid
        records.jsonl   one record a line, appended with one write() each
        acked           byte offset in records.jsonl up to which the server took them
        rejected.jsonl  records the server refused as invalid, with its reason
        artifacts/      copies of artifacts logged while the server was down
        lock            flock()ed while the writing process lives

A record is a JSON array: ``["m", key, value, timestamp, step, extra]`` (metric; extra
holds MLflow 3's model and dataset ids, or is absent), ``["p", key, value]`` (param),
``["t", key, value]`` (tag), ``["d", key]`` (deleted tag), ``["u", status, end_time,
run_name]`` (run update; a terminal status ends the run), ``["a", path, artifact_path,
repository]`` (an artifact kept under ``artifacts/``, to upload). A write() to a file survives
SIGKILL of the writing process (the kernel has it), so a record is durable once the
call that logged it returned; fsync is not needed for that promise.

The lock tells a live segment from a leftover: the kernel releases it when the
process ends, however it ends, so ``sync`` and the next tracked run replay exactly the
segments nobody writes any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "FORMAT",
    "Record",
    "Role",
    "Segment",
    "SegmentMeta",
    "leftovers",
    "parse",
]

FORMAT = 1
"""Version of the on-disk format; a segment of another format is left alone."""

Role = Literal["owner", "child", "worker"]
Record = list[Any]

_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class SegmentMeta:
    """Where a segment's records go; holds no secret.

    Attributes:
        tracking_uri: The tracking URI without credentials, query or fragment.
        run_id: The run the records belong to.
        experiment_id: The run's experiment.
        role: ``owner`` (a tracked run: sends its status), ``child`` (a run nested
            under one, status included) or ``worker`` (a process attached to a run it
            does not own: never sends a status).
        host: Host name of the writing process.
        pid: Its process id.
        created: Unix time the segment was created.
        format: :data:`FORMAT`.
    """

    tracking_uri: str
    run_id: str
    experiment_id: str
    role: Role
    host: str
    pid: int
    created: float
    format: int = FORMAT

    @classmethod
    def for_this_process(
        cls, tracking_uri: str, run_id: str, experiment_id: str, role: Role
    ) -> SegmentMeta:
        """A meta for a segment written by this process, now."""
        return cls(
            tracking_uri,
            run_id,
            experiment_id,
            role,
            socket.gethostname(),
            os.getpid(),
            time.time(),
        )


def parse(line: bytes) -> Record | None:
    """One record from its line, or ``None`` for a torn or foreign line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, list) and record and isinstance(record[0], str) else None


class Segment:
    """One writer's records of one run, on disk; thread-safe.

    Create a live segment with :meth:`create` (locked for its life) or take over a
    leftover with :meth:`adopt`. Appends go to the end of ``records.jsonl``; the
    reader takes records from the acknowledged offset on, and :meth:`ack` moves it.
    When everything is acknowledged the file is truncated, so a healthy run's
    segment stays a few kilobytes however long it runs.
    """

    def __init__(self, path: Path, meta: SegmentMeta, lock_fd: int) -> None:
        self.path = path
        self.meta = meta
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._records = path / "records.jsonl"
        self._fd = os.open(self._records, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._acked = _read_offset(path / "acked", self._size)
        self.generation = 0
        """Changes when the file is rewritten; offsets of an older generation are void."""

    # --- life -------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, meta: SegmentMeta) -> Segment:
        """Create and lock a new segment for this process under ``directory``.

        Raises:
            OSError: The directory cannot be created or written.
        """
        writer = f"{meta.host}-{meta.pid}-{secrets.token_hex(3)}"
        path = directory / meta.run_id / writer
        path.mkdir(parents=True, mode=0o700)
        lock_fd = _lock(path, blocking=True)
        assert lock_fd is not None
        _write_atomically(path / "meta.json", json.dumps(asdict(meta), sort_keys=True))
        return cls(path, meta, lock_fd)

    @classmethod
    def adopt(cls, path: Path) -> Segment | None:
        """Lock a leftover segment for replay; ``None`` when its writer lives or it is not ours.

        Args:
            path: The segment's directory.
        """
        try:
            data = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            meta = SegmentMeta(**data)
        except (OSError, ValueError, TypeError):
            return None
        if meta.format != FORMAT:
            return None
        lock_fd = _lock(path, blocking=False)
        if lock_fd is None:
            return None
        if not (path / "meta.json").exists():  # removed by whoever held the lock before
            os.close(lock_fd)
            return None
        return cls(path, meta, lock_fd)

    def close(self, *, remove: bool) -> None:
        """Release the segment; ``remove`` deletes its files (only when all were delivered)."""
        with self._mutex:
            if self._fd < 0:
                return
            os.close(self._fd)
            self._fd = -1
            if remove:
                shutil.rmtree(self.path / "artifacts", ignore_errors=True)
                for name in ("records.jsonl", "acked", "rejected.jsonl", "meta.json"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.path / name).unlink()
            os.close(self._lock_fd)
            if remove:
                with contextlib.suppress(OSError):
                    (self.path / "lock").unlink()
                    self.path.rmdir()
                    self.path.parent.rmdir()  # the run's directory, once its last segment is gone

    # --- writing ----------------------------------------------------------------------
    def append(self, records: list[Record]) -> tuple[int, int]:
        """Append records with one write(); durable against SIGKILL when this returns.

        Returns:
            The bytes written, and the bytes still waiting for the server.
        """
        data = b"".join(_encode(record) for record in records)
        with self._mutex:
            if self._fd < 0:
                raise ValueError(f"the spool segment {self.path} is closed")
            os.write(self._fd, data)
            self._size += len(data)
            return len(data), self._size - self._acked

    def keep(self, local: Path) -> Path:
        """Copy a file or directory under ``artifacts/``; returns the copy's path."""
        target = self.path / "artifacts" / secrets.token_hex(8) / local.name
        target.parent.mkdir(parents=True)
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copy2(local, target)
        return target

    def discard(self, relative: str) -> None:
        """Delete a kept artifact once uploaded."""
        shutil.rmtree((self.path / relative).parent, ignore_errors=True)

    @property
    def pending_bytes(self) -> int:
        """Bytes written and not yet acknowledged by the server."""
        with self._mutex:
            return self._size - self._acked

    # --- reading and acknowledging -------------------------------------------------------
    def read(self, limit: int = _READ_CHUNK) -> tuple[int, list[tuple[int, Record]]]:
        """The next unacknowledged records, each with the offset just after it.

        Args:
            limit: Most bytes to read.

        Returns:
            ``(generation, [(end_offset, record), ...])``; a torn or foreign line is
            skipped (its end offset still advances, so it is acknowledged with the rest).
        """
        with self._mutex:
            if self._fd < 0:
                return self.generation, []
            start, end, generation = self._acked, self._size, self.generation
            data = os.pread(self._fd, min(limit, end - start), start) if end > start else b""
        records: list[tuple[int, Record]] = []
        offset = start
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # the rest of this line is beyond the limit
            offset += len(line)
            record = parse(line)
            if record is not None:
                records.append((offset, record))
            else:
                records.append((offset, ["#"]))
        if not records and data and len(data) >= limit:  # one line longer than the limit
            return self.read(limit * 4)
        return generation, records

    def ack(self, generation: int, offset: int) -> bool:
        """Record that the server took every record before ``offset``.

        Returns:
            Whether the ack applied (``False`` when the file was rewritten meanwhile).
        """
        with self._mutex:
            if generation != self.generation or self._fd < 0:
                return False
            self._acked = max(self._acked, offset)
            if self._acked >= self._size:  # all delivered: start the file afresh
                os.ftruncate(self._fd, 0)
                self._size = self._acked = 0
                self.generation += 1
            _write_atomically(self.path / "acked", str(self._acked))
            return True

    def reject(self, records: list[Record], reason: str) -> None:
        """Keep records the server refused as invalid, with its reason, for the record."""
        lines = b"".join(_encode(["rejected", reason, record]) for record in records)
        with self._mutex, (self.path / "rejected.jsonl").open("ab") as handle:
            handle.write(lines)

    def compact(self, keep: int, droppable: str = "m") -> tuple[int, int]:
        """Drop the oldest unacknowledged records of kind ``droppable`` beyond ``keep`` bytes.

        The file is rewritten with the other records and the newest droppable ones,
        and replaces the old one atomically; records of other kinds are never dropped.

        Args:
            keep: Pending bytes to keep at most (as far as droppable records allow).
            droppable: The record kind that may be dropped (metric points).

        Returns:
            ``(records dropped, pending bytes after)``.
        """
        with self._mutex:
            data = os.pread(self._fd, self._size - self._acked, self._acked)
            lines = data.splitlines(keepends=True)
            excess = len(data) - keep
            kept: list[bytes] = []
            dropped = 0
            for line in lines:
                if excess > 0 and line.startswith(b'["' + droppable.encode() + b'"'):
                    excess -= len(line)
                    dropped += 1
                    continue
                kept.append(line)
            temporary = self.path / "records.jsonl.new"
            with temporary.open("wb") as handle:
                handle.writelines(kept)
            os.replace(temporary, self._records)
            os.close(self._fd)
            self._fd = os.open(self._records, os.O_RDWR | os.O_APPEND)
            self._size = sum(len(line) for line in kept)
            self._acked = 0
            self.generation += 1
            _write_atomically(self.path / "acked", "0")
            return dropped, self._size


def leftovers(directory: Path) -> Iterator[Segment]:
    """Every segment under ``directory`` whose writer is gone, locked for replay.

    Args:
        directory: The spool directory.

    Yields:
        Adopted segments, oldest first; the caller closes each one.
    """
    if not directory.is_dir():
        return
    paths = sorted(directory.glob("*/*/meta.json"), key=_mtime)
    for meta in paths:
        segment = Segment.adopt(meta.parent)
        if segment is not None:
            yield segment


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _encode(record: Record) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _lock(path: Path, *, blocking: bool) -> int | None:
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read_offset(path: Path, size: int) -> int:
    try:
        return min(int(path.read_text(encoding="utf-8").strip() or 0), size)
    except (OSError, ValueError):
        return 0


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
