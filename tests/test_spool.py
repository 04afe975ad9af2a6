"""The write-ahead spool on disk, and how records are packed into requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from michelangelo_mlflow._delivery import MAX_BATCH_BYTES, units
from michelangelo_mlflow._spool import Segment, SegmentMeta, leftovers, parse


def meta(run_id: str = "r1", role: str = "owner") -> SegmentMeta:
    return SegmentMeta.for_this_process("http://127.0.0.1:5000", run_id, "7", role)  # type: ignore[arg-type]


def metric(i: int) -> list[object]:
    return ["m", "loss", 1.0 / (i + 1), 1_700_000_000_000 + i, i]


def test_records_are_read_back_in_order_and_acknowledged(tmp_path: Path) -> None:
    segment = Segment.create(tmp_path, meta())
    segment.append([metric(0), ["p", "lr", "0.1"]])
    segment.append([["t", "team", "risk"], ["u", "FINISHED", 5, None]])
    generation, entries = segment.read()
    assert [record for _, record in entries] == [
        metric(0),
        ["p", "lr", "0.1"],
        ["t", "team", "risk"],
        ["u", "FINISHED", 5, None],
    ]
    assert segment.ack(generation, entries[1][0])
    assert [record[0] for _, record in segment.read()[1]] == ["t", "u"]
    assert segment.ack(generation, entries[-1][0])
    assert segment.pending_bytes == 0
    assert (segment.path / "records.jsonl").stat().st_size == 0  # drained: the file restarts
    segment.close(remove=True)
    assert not (tmp_path / "r1").exists()


def test_an_ack_from_before_a_compaction_does_not_apply(tmp_path: Path) -> None:
    segment = Segment.create(tmp_path, meta())
    segment.append([metric(i) for i in range(10)])
    generation, entries = segment.read()
    segment.compact(keep=10**6)
    assert not segment.ack(generation, entries[3][0])
    assert len(segment.read()[1]) == 10


def test_compaction_drops_the_oldest_metric_points_only(tmp_path: Path) -> None:
    segment = Segment.create(tmp_path, meta())
    segment.append([["p", "lr", "0.1"]])
    segment.append([metric(i) for i in range(100)])
    segment.append([["t", "team", "risk"], ["u", "KILLED", 9, None]])
    before = segment.pending_bytes
    dropped, after = segment.compact(keep=before // 2)
    records = [record for _, record in segment.read()[1]]
    assert dropped > 0
    assert after <= before // 2 + 100
    assert ["p", "lr", "0.1"] in records
    assert ["t", "team", "risk"] in records
    assert records[-1] == ["u", "KILLED", 9, None]
    steps = [record[4] for record in records if record[0] == "m"]
    assert steps == list(range(100 - len(steps), 100))  # the newest points are kept, in order
    assert len(steps) == 100 - dropped


def test_a_torn_last_line_is_not_read(tmp_path: Path) -> None:
    segment = Segment.create(tmp_path, meta())
    segment.append([metric(0)])
    with (segment.path / "records.jsonl").open("ab") as handle:
        handle.write(b'["m","loss",0.5,17')  # a write cut short (power loss)
    assert [record for _, record in segment.read()[1]] == [metric(0)]
    assert parse(b'{"not": "a record"}\n') is None


def test_a_live_segment_is_not_a_leftover(tmp_path: Path) -> None:
    live = Segment.create(tmp_path, meta("live"))
    assert list(leftovers(tmp_path)) == []
    live.close(remove=False)
    adopted = list(leftovers(tmp_path))
    assert [s.meta.run_id for s in adopted] == ["live"]
    for segment in adopted:
        segment.close(remove=False)


def test_a_killed_writer_leaves_every_returned_record(tmp_path: Path) -> None:
    script = (
        "import sys, os\n"
        "from pathlib import Path\n"
        "from michelangelo_mlflow._spool import Segment, SegmentMeta\n"
        "seg = Segment.create(Path(sys.argv[1]), SegmentMeta.for_this_process("
        "'http://h:5000', 'killed', '1', 'owner'))\n"
        "for i in range(500):\n"
        "    seg.append([['m', 'loss', float(i), 1, i]])\n"
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
    (segment,) = list(leftovers(tmp_path))
    assert [record[4] for _, record in segment.read()[1]] == list(range(500))
    assert segment.meta.pid == process.pid
    segment.close(remove=False)


def test_meta_holds_no_credentials(tmp_path: Path) -> None:
    segment = Segment.create(tmp_path, meta())
    stored = json.loads((segment.path / "meta.json").read_text())
    assert set(stored) == {
        "tracking_uri", "run_id", "experiment_id", "role", "host", "pid", "created", "format",
    }  # fmt: skip
    assert oct((segment.path / "records.jsonl").stat().st_mode & 0o777) == oct(0o600)
    segment.close(remove=True)


# --- packing records into requests ---------------------------------------------------


def entries(records: list[list[object]]) -> list[tuple[int, list[object]]]:
    return [(i + 1, record) for i, record in enumerate(records)]


def test_metrics_are_packed_a_thousand_to_a_request() -> None:
    packed = list(units(entries([metric(i) for i in range(2500)])))
    assert [len(u.records) for u in packed] == [1000, 1000, 500]
    assert [u.end for u in packed] == [1000, 2000, 2500]


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
    assert [u.end for u in packed] == [1, 2, 3, 4]


def test_a_request_stays_under_the_size_limit() -> None:
    records = [["t", f"t{i}", "x" * 8000] for i in range(99)]
    records += [["p", f"p{i}", "y" * 6000] for i in range(99)]
    packed = list(units(entries(records)))
    for unit in packed:
        size = sum(len(json.dumps(r)) for r in unit.records)
        assert size < MAX_BATCH_BYTES
    assert len(packed) > 1
