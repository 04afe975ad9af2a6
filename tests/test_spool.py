"""The spool's storage (SQLite, one database per writer), and packing records into requests."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from michelangelo_mlflow._logging import storage as storage_module
from michelangelo_mlflow._logging.courier import hold_for_full_batch
from michelangelo_mlflow._logging.delivery import MAX_BATCH_BYTES, units
from michelangelo_mlflow._logging.records import encode_metric, encode_records
from michelangelo_mlflow._logging.storage import Damaged, Storage, leftover_paths, runs_in


def metric(i: int) -> list[object]:
    return ["m", "loss", 1.0 / (i + 1), 1_700_000_000_000 + i, i]


def stored(storage: Storage, run: int) -> list[list[object]]:
    return [[kind, *body] for _, kind, body in storage.read(run, limit=10**6)]


def page_size(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA page_size").fetchone()[0])


def new_storage(directory: Path, run_id: str = "r1") -> tuple[Storage, int]:
    storage = Storage.create(directory)
    meta = storage.add_run(run_id, "http://127.0.0.1:5000", "7", "owner")
    return storage, meta.key


def test_nothing_is_written_before_the_first_record(tmp_path: Path) -> None:
    storage, _ = new_storage(tmp_path / "spool")
    assert not (tmp_path / "spool").exists()
    storage.release(remove=True)
    assert not (tmp_path / "spool").exists()


def test_records_are_read_back_in_order_and_forgotten_once_acknowledged(tmp_path: Path) -> None:
    storage, run = new_storage(tmp_path / "spool")
    storage.append(run, encode_records([metric(0), ["p", "lr", "0.1"]]))
    storage.append(run, encode_records([["t", "team", "risk"], ["u", "FINISHED", 5, None]]))
    rows = storage.read(run, limit=100)
    assert stored(storage, run) == [
        metric(0),
        ["p", "lr", "0.1"],
        ["t", "team", "risk"],
        ["u", "FINISHED", 5, None],
    ]
    storage.ack(run, [seq for seq, _, _ in rows[:2]])
    assert [record[0] for record in stored(storage, run)] == ["t", "u"]
    storage.ack(run, [seq for seq, _, _ in rows[2:]])
    assert storage.pending_bytes(run) == 0
    assert storage.empty()
    storage.release(remove=True)
    assert list(tmp_path.iterdir()) == []  # delivered: nothing left behind, not even the folder


def test_a_refused_record_is_set_aside_alone(tmp_path: Path) -> None:
    storage, run = new_storage(tmp_path)
    storage.append(run, encode_records([["d", "never-set"], metric(1)]))
    deleted, _ = storage.read(run, limit=10)
    reason = "RESOURCE_DOES_NOT_EXIST: no tag never-set"
    storage.ack(run, [deleted[0]], reason=reason)
    assert stored(storage, run) == [metric(1)]
    assert storage.rejected(run) == [("d", ["never-set"], reason)]
    storage.release(remove=False)


def test_the_size_cap_drops_the_oldest_metric_points_only(tmp_path: Path) -> None:
    storage, run = new_storage(tmp_path)
    storage.append(run, encode_records([["p", "lr", "0.1"]]))
    storage.append(run, encode_records([metric(i) for i in range(100)]))
    storage.append(run, encode_records([["t", "team", "risk"], ["u", "KILLED", 9, None]]))
    before = storage.pending_bytes(run)
    dropped = storage.drop_oldest_metrics(run, before // 2)
    records = stored(storage, run)
    assert dropped > 0
    assert storage.pending_bytes(run) <= before - before // 2 + 100
    assert ["p", "lr", "0.1"] in records
    assert ["t", "team", "risk"] in records
    assert records[-1] == ["u", "KILLED", 9, None]
    steps = [record[4] for record in records if record[0] == "m"]
    assert steps == list(range(100 - len(steps), 100))  # the newest points are kept, in order
    assert len(steps) == 100 - dropped
    storage.release(remove=False)


def test_a_live_storage_is_not_a_leftover(tmp_path: Path) -> None:
    live, run = new_storage(tmp_path, "live")
    live.append(run, encode_records([metric(0)]))
    (path,) = leftover_paths(tmp_path)
    assert Storage.adopt(path) is None  # its writer holds the lock
    live.release(remove=False)
    adopted = Storage.adopt(path)
    assert adopted is not None
    assert [meta.run_id for meta in adopted.runs()] == ["live"]
    assert stored(adopted, adopted.runs()[0].key) == [metric(0)]
    adopted.release(remove=False)


def test_a_killed_writer_leaves_every_returned_record(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from michelangelo_mlflow._logging.records import encode_records\n"
        "from michelangelo_mlflow._logging.storage import Storage\n"
        "storage = Storage.create(Path(sys.argv[1]))\n"
        "run = storage.add_run('killed', 'http://h:5000', '1', 'owner').key\n"
        "for i in range(500):\n"
        "    storage.append(run, encode_records([['m', 'loss', float(i), 1, i]]))\n"
        "print('appended', flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "appended"
    process.kill()
    process.wait(timeout=30)
    (path,) = leftover_paths(tmp_path)
    assert f"-{process.pid}-" in path.name
    adopted = Storage.adopt(path)
    assert adopted is not None
    (meta,) = adopted.runs()
    assert [record[4] for record in stored(adopted, meta.key)] == list(range(500))
    adopted.release(remove=False)


def test_records_larger_than_a_page_and_a_leftover_with_4_kib_pages_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_param, long_tag = ["p", "config", "x" * 6000], ["t", "notes", "é" * 8000]  # MLflow's caps
    monkeypatch.setattr(storage_module, "_PAGE_SIZE", 4096)  # as releases before 1 KiB pages
    old, run = new_storage(tmp_path / "old")
    old.append(run, encode_records([metric(0), long_param]))
    old.release(remove=False)
    monkeypatch.undo()
    (path,) = leftover_paths(tmp_path / "old")
    adopted = Storage.adopt(path)
    assert adopted is not None
    (meta,) = adopted.runs()
    adopted.append(meta.key, encode_records([long_tag, metric(1)]))
    assert stored(adopted, meta.key) == [metric(0), long_param, long_tag, metric(1)]
    adopted.release(remove=False)
    assert page_size(path) == 4096

    new, run = new_storage(tmp_path / "new")
    new.append(run, encode_records([long_param, metric(0), long_tag]))
    assert stored(new, run) == [long_param, metric(0), long_tag]
    new.release(remove=False)
    (path,) = leftover_paths(tmp_path / "new")
    assert page_size(path) == 1024


def test_a_short_run_is_never_checkpointed_and_a_long_ones_log_stays_bounded(
    tmp_path: Path,
) -> None:
    """Each record is its own commit: a page of write-ahead log a call.

    A checkpoint's cost is mostly fixed, so the checkpointer thread copies the log
    every 1,000 pages, and a run whose records are delivered before then (its files
    are removed) is never checkpointed. The writer's own checkpoint, from 4,000 pages
    on, bounds the log whatever the thread does (within twice that, however busy the
    machine: a commit checkpoints only when the thread is not checkpointing).
    """
    storage, run = new_storage(tmp_path)
    wal = storage.path.with_name(storage.path.name + "-wal")
    for i in range(900):
        storage.append(run, encode_records([metric(i)]))
    assert storage.path.stat().st_size <= 8 * 1024  # its schema at most: nothing copied yet
    assert wal.stat().st_size >= 900 * 1024

    frame = 1024 + 24  # a page and its frame header
    bound = 2 * storage_module._AUTOCHECKPOINT_PAGES * frame + 32
    largest = 0
    for i in range(900, 20_000):
        storage.append(run, encode_records([metric(i)]))
        if i % 200 == 0:
            largest = max(largest, wal.stat().st_size)
    assert largest <= bound
    assert storage.path.stat().st_size >= 12_000 // 16 * 1024  # most records copied over
    assert stored(storage, run) == [metric(i) for i in range(20_000)]
    storage.release(remove=True)
    assert not tmp_path.exists()  # the files and the emptied directory are gone


@pytest.mark.parametrize(
    "content", [b"garbage, not a database" * 100, b"SQLite format 3\x00" + b"\x00" * 50]
)
def test_a_damaged_file_is_reported_not_read(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "host-1-abc.db"
    path.write_bytes(content)
    with pytest.raises(Damaged) as info:
        Storage.adopt(path)
    assert info.value.path == path
    assert info.value.reason


def test_the_database_holds_no_credentials(tmp_path: Path) -> None:
    storage, run = new_storage(tmp_path)
    storage.append(run, encode_records([metric(0)]))
    storage.release(remove=False)  # a leftover: what anyone finds on disk
    db = sqlite3.connect(storage.path)
    assert db.execute("SELECT run_id, tracking_uri, experiment_id, role FROM runs").fetchall() == [
        ("r1", "http://127.0.0.1:5000", "7", "owner")
    ]
    db.close()


def test_numpy_values_are_encoded_as_mlflows_entities_take_them() -> None:
    from mlflow.entities import Metric

    point = Metric("loss", np.float32(0.5), np.int64(1_700_000_000_000), np.int64(3))
    assert encode_metric(point) == ["m", "loss", 0.5, 1_700_000_000_000, 3]
    assert json.dumps(encode_metric(Metric("n", np.int32(2), 1, np.uint8(7))))  # JSON-ready


@given(
    key=st.text(max_size=30) | st.integers(),
    value=st.floats() | st.integers(-(2**70), 2**70).map(float) | st.just(-0.0),
    timestamp=st.integers(-(2**63), 2**63 - 1) | st.booleans(),
    step=st.integers(-(2**63), 2**63 - 1) | st.booleans(),
    wrap=st.sampled_from([float, np.float64, np.float32, np.int64, int]),
    extra=st.sampled_from([None, {"model_id": "m-1"}, {"dataset_name": "d\u00e9"}]),
)
@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_a_metric_point_is_stored_as_the_json_encoder_writes_it(
    key: str | int,
    value: float,
    timestamp: int,
    step: int,
    wrap: type,
    extra: dict[str, str] | None,
) -> None:
    """The logging call formats a plain point itself (a third of the encoder's cost): the
    body must be the encoder's, byte for byte, for every key and value MLflow takes,
    or the courier would send something else."""
    from types import SimpleNamespace

    with contextlib.suppress(OverflowError, ValueError), np.errstate(over="ignore"):
        value = wrap(value)  # unless it is not a value of that type (int(nan))
    point = SimpleNamespace(key=key, value=value, timestamp=timestamp, step=step)
    if extra:
        vars(point).update(extra)
    record = encode_metric(point)
    expected = json.dumps(record[1:], separators=(",", ":"))
    assert encode_records([record]) == [("m", expected)]


# --- packing records into requests ---------------------------------------------------


def entries(records: list[list[object]]) -> list[tuple[int, list[object]]]:
    return [(i + 1, record) for i, record in enumerate(records)]


def test_metrics_are_packed_a_thousand_to_a_request() -> None:
    packed = list(units(entries([metric(i) for i in range(2500)])))
    assert [len(u.records) for u in packed] == [1000, 1000, 500]
    assert [u.seqs[-1] for u in packed] == [1000, 2000, 2500]


def test_a_smaller_window_makes_smaller_batches() -> None:
    packed = list(units(entries([metric(i) for i in range(250)]), max_items=100))
    assert [len(u.records) for u in packed] == [100, 100, 50]


def test_params_and_tags_are_packed_a_hundred_to_a_request() -> None:
    records = [["p", f"p{i}", "1"] for i in range(150)] + [["t", f"t{i}", "1"] for i in range(150)]
    packed = list(units(entries(records)))
    for unit in packed:
        kinds = [r[0] for r in unit.records]
        assert kinds.count("p") <= 100
        assert kinds.count("t") <= 100
    assert sum(len(u.records) for u in packed) == 300


def test_a_repeated_param_key_starts_a_new_request() -> None:
    packed = list(units(entries([["p", "lr", "0.1"], metric(0), ["p", "lr", "0.1"]])))
    assert [[r[0] for r in u.records] for u in packed] == [["p", "m"], ["p"]]


def test_status_and_deleted_tags_are_sent_alone_in_order() -> None:
    records = [metric(0), ["d", "old"], metric(1), ["u", "FINISHED", 1, None]]
    packed = list(units(entries(records)))
    assert [u.kind for u in packed] == ["batch", "delete", "batch", "update"]
    assert [u.seqs for u in packed] == [[1], [2], [3], [4]]


def test_a_request_stays_under_the_size_limit() -> None:
    records = [["t", f"t{i}", "x" * 8000] for i in range(99)]
    records += [["p", f"p{i}", "y" * 6000] for i in range(99)]
    packed = list(units(entries(records)))
    for unit in packed:
        size = sum(len(json.dumps(r)) for r in unit.records)
        assert size < MAX_BATCH_BYTES
    assert len(packed) > 1


# --- when a spool that is due waits for a full batch -----------------------------------


@pytest.mark.parametrize(
    ("pending", "last", "holds", "held"),
    [
        (40_000, 0, 0, True),  # 40 kB in one interval: a full batch soon
        (20_000, 0, 0, True),  # a few hundred points a second (64 tasks on 2 cores): waits too
        (500, 0, 0, True),  # a slow logger's points go every few intervals, not every one
        (40_000, 0, 3, False),  # waited three intervals already: sent now
        (60_000, 50_000, 2, True),  # still growing, the last interval it may wait
        (40_000, 40_000, 0, False),  # no longer growing: nothing more is coming soon
        (30_000, 30_500, 1, False),  # shrank (a delivery took some): sent
        (200_000, 10_000, 1, True),  # past a full batch: the full ones go, the rest waits
    ],
)
def test_a_spool_still_logging_waits_at_most_three_intervals_for_a_full_batch(
    pending: int, last: int, holds: int, held: bool
) -> None:
    assert hold_for_full_batch(pending, last, holds) is held


CHURN = """
import random, sys, time
from pathlib import Path
from michelangelo_mlflow._logging.storage import Storage, count_for, leftover_paths, runs_in

directory, role, until = Path(sys.argv[1]), sys.argv[2], time.time() + float(sys.argv[3])
while time.time() < until:
    if role == "writer":  # a task: its run's records, then its files removed at its end
        storage = Storage.create(directory)
        meta = storage.add_run("run", "http://127.0.0.1:1", "1", "driver")
        storage.persist_run(meta)
        for step in range(20):
            storage.append(meta.key, [("m", f'["loss", 0.5, 1, {step}]')])
        time.sleep(random.uniform(0, 0.02))
        storage.release(remove=True)
    else:  # a closing run looking for live writers holding records of its runs
        for path in leftover_paths(directory):
            runs_in(path)
            count_for(path, ["run"])
"""


def test_reading_a_writer_that_removes_its_files_leaves_none_of_them(tmp_path: Path) -> None:
    """Read-only looks at live writers' databases leave no -wal or -shm behind them.

    A connection that opened a database as its writer removed it would otherwise leave
    the write-ahead log and its index behind, nobody's, in the shared directory (one of
    64 tasks' in one run).
    """
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "README").write_text("keeps the directory")  # as other writers' files do
    churn = [
        subprocess.Popen([sys.executable, "-c", CHURN, str(directory), role, "4"])
        for role in ("writer", "reader") * 3
    ]
    assert [process.wait(timeout=120) for process in churn] == [0] * 6
    writers = {p.name.split(".db")[0] for p in directory.glob("*.db")}
    left = [p.name for p in directory.iterdir() if p.name != "README"]
    orphans = [name for name in left if name.split(".db")[0] not in writers]
    assert orphans == []


def test_a_live_writers_runs_are_read_from_its_lock_file_not_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closing run looks for its records in other processes' storages: 64 tasks in one
    spool directory must not open each other's databases to do it.

    Each writer lists its runs in its lock file before storing them; an empty list (a
    writer of an earlier release, or a list that could not be written) is read from
    the database instead.
    """
    directory = tmp_path / "spool"
    worker = Storage.create(directory)
    meta = worker.add_run("a" * 32, "http://127.0.0.1:1", "1", "worker")
    worker.persist_run(meta)
    worker.append(meta.key, [("m", '["loss", 0.5, 1, 0]')])
    worker.persist_run(worker.add_run("b" * 32, "http://127.0.0.1:1", "1", "owner"))
    lock = worker.path.with_suffix(".lock")
    assert Storage.adopt(worker.path) is None  # live: its lock is held
    with open(lock, "ab") as file:
        file.write(b"owner cccc")  # a line being written: not read until its newline is

    with monkeypatch.context() as patched:
        patched.setattr(storage_module, "_read_only", _must_not_open)
        assert runs_in(worker.path) == [("a" * 32, "worker"), ("b" * 32, "owner")]

    lock.write_bytes(b"")  # as an earlier release's writer leaves it
    assert sorted(runs_in(worker.path)) == [("a" * 32, "worker"), ("b" * 32, "owner")]

    # A list the disk could not take is emptied and stays empty, never missing a run.
    writer = Storage.create(directory)
    with monkeypatch.context() as patched:
        patched.setattr(storage_module.os, "write", _disk_full)
        writer.persist_run(writer.add_run("d" * 32, "http://127.0.0.1:1", "1", "owner"))
    writer.persist_run(writer.add_run("e" * 32, "http://127.0.0.1:1", "1", "child"))
    assert writer.path.with_suffix(".lock").read_bytes() == b""
    assert sorted(runs_in(writer.path)) == [("d" * 32, "owner"), ("e" * 32, "child")]
    worker.release(remove=True)
    writer.release(remove=True)
    assert not directory.exists()  # nothing of either is left


def _must_not_open(
    path: Path, query: str, args: tuple[str, ...], *, timeout: float = 1.0
) -> list[tuple[object, ...]]:
    raise AssertionError(f"opened {path} for {query}")


def _disk_full(fd: int, data: bytes) -> int:
    raise OSError(28, "No space left on device")


COUNT = """
import sys
from pathlib import Path
from michelangelo_mlflow._logging.storage import count_for
print(count_for(Path(sys.argv[1]), [sys.argv[2]]))
"""


def test_only_a_workers_records_are_read_by_other_processes_while_it_lives(
    tmp_path: Path,
) -> None:
    """An owner's database is locked to other processes while it lives (its commits then
    skip SQLite's six lock calls); a worker's stays readable, for the run's end in the
    owner's process; ``sync``'s count takes leftovers only."""
    from michelangelo_mlflow._logging.replay import pending_bytes

    def count(storage: Storage, run_id: str) -> int:
        command = [sys.executable, "-c", COUNT, str(storage.path), run_id]
        return int(subprocess.run(command, capture_output=True, check=True, text=True).stdout)

    owner = Storage.create(tmp_path)
    run = owner.add_run("o" * 32, "http://127.0.0.1:1", "1", "owner")
    owner.persist_run(run)
    owner.append(run.key, encode_records([metric(0), metric(1)]))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite3.connect(f"file:{owner.path}?mode=ro", uri=True, timeout=0).execute(
            "SELECT COUNT(*) FROM records"
        ).fetchall()
    assert count(owner, "o" * 32) == 0  # not waited for: it sends its records itself
    assert pending_bytes(tmp_path) == 0  # live: not sync's to send

    worker = owner.add_run("w" * 32, "http://127.0.0.1:1", "1", "worker")  # e.g. worker_run()
    owner.persist_run(worker)
    owner.append(worker.key, encode_records([metric(2)]))
    assert count(owner, "w" * 32) == 1
    assert count(owner, "o" * 32) == 2

    owner.release(remove=False)
    assert pending_bytes(tmp_path) > 0  # a leftover now
