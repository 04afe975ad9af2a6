"""Throughput of ``mlflow.log_metric`` inside a tracked run (SQLite spool) vs plain MLflow.

For each size (default 2,000 and 20,000 points, one metric, one point per step), the
time from the first call to the run closed with every point on the server, against
baselines measured in the same run on the same real local MLflow server (sqlite, 1
worker): ``MlflowClient.log_batch`` of the same points in a plain run (the baseline
of the ratio; targets: the SDK at most 1.5x at 2,000 points, 1.1x at 20,000),
MLflow's async logging with and without ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1``,
and a plain ``log_metric`` loop; plus one ``MlflowClient.log_batch`` inside the
tracked run (the spool without MLflow's per-call cost). The baseline and the SDK's
loop are measured ``--repeat`` times, interleaved, and their median is reported
(per-call times pooled over the repeats); "open to closed" also counts opening the
run (``create_run``; for the SDK, entering ``tracking_run``). Each ``log_metric`` call
is timed (``time.perf_counter_ns``; targets: median at most 100 us, p99 at most 1 ms).
A plain or unbuffered async loop of more than ``--sample`` points is measured on
``--sample`` points and extrapolated linearly (marked "extrapolated"). Every measured
run is checked by counting the points ``MlflowClient.get_metric_history`` returns.

Then the spool with the server down, in a fresh process and server: a tracked run
is opened, the server is killed (SIGKILL), ``--down-points`` points (100,000) are
logged, the spool's size on disk (the ``<writer>.db`` and ``<writer>.db-wal`` files;
target: at most 110 B a point, twice the old JSONL spool's 55 B) with the unsent
payload bytes (``replay.pending_bytes``), and the process's peak RSS growth (VmHWM,
reset first; target: at most 20 MiB) are measured after 10 %, 50 % and all of them,
the server is restarted on the same port and store, and the run is closed; every
point must arrive. A last table sets each measure beside its target.

    python benchmarks/spool_throughput.py [--points 2000 20000] [--repeat 3] [--sample 2000]
                                          [--down-points 100000] [--down-grace S] [--quick]

``--quick`` (200 and 2,000 points, one repeat, a sample of 100, 2,000 points down)
runs in under a minute on an idle machine. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = "loss"


def value(step: int) -> float:
    return 1.0 / (step + 1)  # a realistic float: about 20 characters in JSON


@dataclass
class Measure:
    mode: str
    points: int
    seconds: float  # first call to the run closed
    open_seconds: float | None = None  # opening the run to the run closed
    loop_seconds: float | None = None  # first call to the last call returned
    call_ns: array.array[int] | None = None
    cpu_ns: array.array[int] | None = None  # the calling thread's CPU time in each call
    run_id: str | None = None
    kept: int | None = None  # points on the server
    distinct: int | None = None  # distinct steps on the server
    status: str | None = None
    extrapolated_from: int | None = None
    notes: list[str] = field(default_factory=list)
    pair_ratios: list[float] = field(default_factory=list)  # each repeat's to its baseline
    control_ns: array.array[int] | None = None  # see control()


# --- the ways of logging ------------------------------------------------------------------
def timed_loop(n: int) -> tuple[float, array.array[int], array.array[int]]:
    """``n`` calls: seconds, and each call's wall time and the thread's CPU time in it."""
    import mlflow

    calls = array.array("q", bytes(8 * n))
    cpu = array.array("q", bytes(8 * n))
    clock, thread_clock = time.perf_counter_ns, time.thread_time_ns
    log_metric = mlflow.log_metric
    start = time.perf_counter()
    for step in range(n):
        before, before_cpu = clock(), thread_clock()
        log_metric(KEY, value(step), step=step)
        cpu[step] = thread_clock() - before_cpu
        calls[step] = clock() - before
    return time.perf_counter() - start, calls, cpu


def control(n: int, median_ns: float) -> array.array[int]:
    """Wall times of ``n`` pure-Python calls as long as a median log call, in no thread's way.

    Measured right after the SDK's loops: what the machine's load alone (preemption
    by other processes) does to the tail of a call that long.
    """

    def busy(k: int) -> None:
        for _ in range(k):
            pass

    k = 1000
    while True:  # calibrate the loop to the median log call
        start = time.perf_counter_ns()
        busy(k)
        took = time.perf_counter_ns() - start
        if took > 5 * median_ns or k > 10**7:
            break
        k *= 2
    k = max(1, int(k * median_ns / max(took, 1)))
    for _ in range(2):  # refine on the median of a few calls (one call is noisy)
        tries = []
        for _ in range(101):
            start = time.perf_counter_ns()
            busy(k)
            tries.append(time.perf_counter_ns() - start)
        k = max(1, int(k * median_ns / max(statistics.median(tries), 1)))
    calls = array.array("q", bytes(8 * n))
    clock = time.perf_counter_ns
    for i in range(n):
        before = clock()
        busy(k)
        calls[i] = clock() - before
    return calls


def log_batch(url: str, experiment_id: str, n: int) -> Measure:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    now = int(time.time() * 1000)
    metrics = [Metric(KEY, value(step), now, step) for step in range(n)]
    opened = time.perf_counter()
    run = client.create_run(experiment_id, run_name=f"log_batch-{n}")
    start = time.perf_counter()
    client.log_batch(run.info.run_id, metrics=metrics)  # MLflow sends 1,000 a request
    client.set_terminated(run.info.run_id)
    end = time.perf_counter()
    return Measure("log_batch", n, end - start, end - opened, run_id=run.info.run_id)


def plain(url: str, experiment_id: str, n: int, mode: str) -> Measure:
    import mlflow

    mlflow.set_tracking_uri(url)
    if mode != "plain":
        if mode == "async_buffered":
            os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
        mlflow.config.enable_async_logging(True)
    try:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{mode}-{n}")
        start = time.perf_counter()
        loop, calls, cpu = timed_loop(n)
        mlflow.end_run()  # drains the async queue
        seconds = time.perf_counter() - start
    finally:
        mlflow.config.enable_async_logging(False)
        os.environ.pop("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", None)
    return Measure(
        mode, n, seconds, loop_seconds=loop, call_ns=calls, cpu_ns=cpu, run_id=run.info.run_id
    )


def sdk(settings: Any, experiment: str, n: int) -> Measure:
    import michelangelo_mlflow as mm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opened = time.perf_counter()
        with mm.tracking_run(experiment, f"sdk-{n}", settings=settings) as run:
            start = time.perf_counter()
            loop, calls, cpu = timed_loop(n)
        end = time.perf_counter()
    measure = Measure("sdk", n, end - start, end - opened, loop, calls, cpu, run_id=run.info.run_id)
    measure.notes += [f"warning: {w.message}" for w in caught if "spool" in str(w.message)]
    return measure


def sdk_batch(settings: Any, experiment: str, n: int) -> Measure:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    import michelangelo_mlflow as mm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mm.tracking_run(experiment, f"sdk_batch-{n}", settings=settings) as run:
            now = int(time.time() * 1000)
            metrics = [Metric(KEY, value(step), now, step) for step in range(n)]
            client = MlflowClient()  # the run's server: its records take the spool
            start = time.perf_counter()
            client.log_batch(run.info.run_id, metrics=metrics)
            loop = time.perf_counter() - start
        seconds = time.perf_counter() - start
    measure = Measure("sdk_batch", n, seconds, loop_seconds=loop, run_id=run.info.run_id)
    measure.notes += [f"warning: {w.message}" for w in caught if "spool" in str(w.message)]
    return measure


def verify(url: str, measure: Measure) -> Measure:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    assert measure.run_id is not None
    history = client.get_metric_history(measure.run_id, KEY)
    measure.kept = len(history)
    measure.distinct = len({m.step for m in history})
    measure.status = client.get_run(measure.run_id).info.status
    wrong = sum(1 for m in history if m.value != value(m.step))
    if wrong:
        measure.notes.append(f"{wrong} point(s) with a wrong value")
    return measure


# --- the spool with the server down (child process) ----------------------------------------
def rss_kb() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(rest.split()[0])
    return out


def down_child(url: str, experiment: str, n: int, spool_dir: str, grace: str) -> None:
    """Open a tracked run, wait for the server to be killed, log ``n`` points, close."""
    import mlflow

    import michelangelo_mlflow as mm

    def say(tag: str, **payload: Any) -> None:
        print(tag, json.dumps(payload), flush=True)

    from michelangelo_mlflow._logging.replay import pending_bytes

    settings = mm.Settings(tracking_uri=url, spool_dir=Path(spool_dir))
    if grace:  # otherwise the SDK's default
        settings = mm.Settings(
            tracking_uri=url, spool_dir=Path(spool_dir), spool_grace=float(grace)
        )
    mm.preflight(settings)
    spool = Path(spool_dir)

    def files(suffix: str) -> int:  # the writer's ``<writer>.db`` or ``<writer>.db-wal``
        return sum(p.stat().st_size for p in spool.glob(f"*{suffix}") if p.is_file())

    def spool_bytes() -> int:
        return files(".db") + files(".db-wal")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mm.tracking_run(experiment, f"down-{n}", settings=settings) as run:
            say("open", run_id=run.info.run_id)
            sys.stdin.readline()  # the server is killed now
            calls = array.array("q", bytes(8 * n))  # allocated before the baseline
            before_bytes = spool_bytes()
            before = rss_kb()
            try:  # the peak from now on (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
                hwm_reset = rss_kb()["VmHWM"] <= before["VmRSS"] + 1024
            except OSError:
                hwm_reset = False
            peak = [before["VmRSS"]]
            stop = threading.Event()

            def sample() -> None:  # the fallback when the peak cannot be reset
                while not stop.wait(0.02):
                    peak[0] = max(peak[0], rss_kb()["VmRSS"])

            sampler = threading.Thread(target=sample, daemon=True)
            if not hwm_reset:
                sampler.start()
            # Log in three legs, to see whether the peak grows with the points kept.
            marks = sorted({max(1, n // 10), max(1, n // 2), n})
            checkpoints = []
            clock = time.perf_counter_ns
            log_metric = mlflow.log_metric
            done, loop = 0, 0.0
            for mark in marks:
                start = time.perf_counter()
                for step in range(done, mark):
                    before_call = clock()
                    log_metric(KEY, value(step), step=step)
                    calls[step] = clock() - before_call
                loop += time.perf_counter() - start
                done = mark
                current = rss_kb()
                peak[0] = max(peak[0], current["VmRSS"], current["VmHWM"] if hwm_reset else 0)
                checkpoints.append(
                    {
                        "points": mark,
                        "peak_kb": peak[0],
                        "spool_bytes": spool_bytes() - before_bytes,
                        "db_bytes": files(".db"),
                        "wal_bytes": files(".db-wal"),
                    }
                )
            stop.set()
            if not hwm_reset:
                sampler.join()
            after = rss_kb()
            say(
                "logged",
                loop=loop,
                median_us=statistics.median(calls) / 1000,
                p99_us=quantile(calls, 0.99) / 1000,
                spool_bytes=spool_bytes() - before_bytes,
                db_bytes=files(".db"),
                wal_bytes=files(".db-wal"),
                pending_bytes=pending_bytes(spool),
                rss_before_kb=before["VmRSS"],
                rss_after_kb=after["VmRSS"],
                peak_kb=peak[0],
                checkpoints=checkpoints,
                hwm_reset=hwm_reset,
            )
            sys.stdin.readline()  # the server answers again
            closing = time.time()
    say(
        "closed",
        closing=closing,
        closed=time.time(),
        grace=settings.spool_grace,
        warnings=[str(w.message) for w in caught],
        left=[str(p.relative_to(spool)) for p in spool.glob("*.db")],
    )
    # For scale: the same points held as MLflow Metric objects (what an in-memory
    # queue keeps), measured with tracemalloc.
    import tracemalloc

    from mlflow.entities import Metric

    tracemalloc.start()
    now = int(time.time() * 1000)
    held = [Metric(KEY, value(step), now, step) for step in range(n)]
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    say("reference", objects_bytes=size, count=len(held))


@dataclass
class Down:
    points: int
    logged: dict[str, Any]
    killed_to_answer: float
    restart: float
    answer_to_closed: float
    closed: dict[str, Any]
    reference: dict[str, Any]
    kept: int
    distinct: int
    status: str


def spool_down(server: Any, experiment: str, n: int, root: Path, grace: str) -> Down:
    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MICHELANGELO_"))}
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--down-child",
            server.url,
            experiment,
            str(n),
            str(root / "spool"),
            grace,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(root / "down-child.log").open("wb"),
        text=True,
        env=env,
        cwd=root,
    )
    assert child.stdin is not None
    assert child.stdout is not None

    def expect(tag: str) -> dict[str, Any]:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(tag + " "):
                result: dict[str, Any] = json.loads(line[len(tag) + 1 :])
                return result
        raise RuntimeError(f"the child process ended before {tag!r}; see {root / 'down-child.log'}")

    try:
        run_id = expect("open")["run_id"]
        server.kill()
        killed = time.time()
        child.stdin.write("killed\n")
        child.stdin.flush()
        logged = expect("logged")
        restarting = time.time()
        server.restart()
        answered = time.time()
        child.stdin.write("back\n")
        child.stdin.flush()
        closed = expect("closed")
        reference = expect("reference")
        child.wait(120)
    finally:
        if child.poll() is None:
            child.kill()
    client = MlflowClient(server.url)
    history = client.get_metric_history(run_id, KEY)
    return Down(
        points=n,
        logged=logged,
        killed_to_answer=answered - killed,
        restart=answered - restarting,
        answer_to_closed=closed["closed"] - answered,
        closed=closed,
        reference=reference,
        kept=len(history),
        distinct=len({m.step for m in history}),
        status=client.get_run(run_id).info.status,
    )


# --- the report ---------------------------------------------------------------------------
def quantile(values: Any, q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


LABELS = {
    "log_batch": "`MlflowClient.log_batch` in a plain run (baseline)",
    "sdk": "**`mlflow.log_metric` loop in `tracking_run` (spool)**",
    "sdk_batch": "one `MlflowClient.log_batch` in `tracking_run` (spool)",
    "async_buffered": "MLflow async logging, buffering 1 s",
    "async": "MLflow async logging, no buffering",
    "plain": "plain `mlflow.log_metric` loop",
}

TARGETS = {  # the targets; printed beside the measures, never asserted
    "call_median_us": 100.0,
    "call_p99_us": 1000.0,
    "ratio": {2_000: 1.5, 20_000: 1.1},
    "rss_growth_mib": 20.0,
    "bytes_per_point": 110.0,  # twice the JSONL spool's 55 B a point
}


def median_of(measures: list[Measure]) -> Measure:
    """The repeat with the median time to closed; per-call times pooled over all repeats."""
    ordered = sorted(measures, key=lambda m: m.seconds)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.call_ns = pool([m.call_ns for m in measures])
    chosen.cpu_ns = pool([m.cpu_ns for m in measures])
    for m in measures:
        if m.kept != m.points or m.distinct != m.points:
            chosen.notes.append(f"a repeat kept {m.kept}/{m.points} points ({m.distinct} steps)")
        chosen.notes += [n for n in m.notes if n not in chosen.notes]
    if len(measures) > 1:
        times = ", ".join(f"{m.seconds:.2f}" for m in measures)
        chosen.notes.append(f"median of {len(measures)} repeats (to closed: {times} s)")
    return chosen


def pool(parts: list[array.array[int] | None]) -> array.array[int] | None:
    found = [part for part in parts if part is not None]
    if not found:
        return None
    pooled: array.array[int] = array.array("q")
    for part in found:
        pooled.extend(part)
    return pooled


def print_size(n: int, rows: list[Measure]) -> None:
    base = next(r for r in rows if r.mode == "log_batch")
    print(
        f"\n{n:,} points: time from the first call to the run closed with every point "
        "on the server\n"
    )
    print(
        "| Way of logging | to closed (s) | ratio to log_batch | open to closed (s) | ratio "
        "| calls (s) | points on server | per call median (µs) | per call p99 (µs) | status |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        mark = f" (extrapolated from {r.extrapolated_from:,} points)" if r.extrapolated_from else ""
        loop = f"{r.loop_seconds:.2f}" if r.loop_seconds is not None else "-"
        if r.extrapolated_from:
            kept = f"{r.kept:,}/{r.extrapolated_from:,} of the sample"
        else:
            kept = f"{r.kept:,}/{n:,} ({100 * (r.kept or 0) / n:.1f} %)"
            if r.distinct != r.kept:
                kept += f", {r.distinct:,} distinct steps"
        med = p99 = opened = open_ratio = "-"
        if r.call_ns is not None:
            med = f"{statistics.median(r.call_ns) / 1000:,.0f}"
            p99 = f"{quantile(r.call_ns, 0.99) / 1000:,.0f}"
        if r.open_seconds is not None and base.open_seconds is not None:
            opened = f"{r.open_seconds:.2f}"
            open_ratio = f"{r.open_seconds / base.open_seconds:.2f}x"
        print(
            f"| {LABELS[r.mode]}{mark} | {r.seconds:.2f} | {r.seconds / base.seconds:.2f}x "
            f"| {opened} | {open_ratio} | {loop} | {kept} | {med} | {p99} | {r.status} |"
        )
    for r in rows:
        for note in r.notes:
            print(f"\n- {LABELS[r.mode]}: {note}")


def print_down(d: Down) -> None:
    n = d.points
    lg = d.logged
    mib = 1 / 1024
    print(
        f"\nThe spool with the server down: {n:,} points logged while it was killed, "
        "then it was restarted and the run closed (fresh process and server)\n"
    )
    print("| Measure | value |")
    print("|---|---:|")
    print(f"| calls while down: total | {lg['loop']:.2f} s |")
    print(
        f"| calls while down: per call median / p99 "
        f"| {lg['median_us']:,.0f} / {lg['p99_us']:,.0f} µs |"
    )
    print(
        f"| spool on disk (.db {lg['db_bytes'] / 2**20:.2f} MiB + .db-wal "
        f"{lg['wal_bytes'] / 2**20:.2f} MiB) | {lg['spool_bytes'] / 2**20:.2f} MiB |"
    )
    print(f"| spool bytes on disk per metric point | {lg['spool_bytes'] / n:.1f} B |")
    print(
        f"| unsent payload (`replay.pending_bytes`) | {lg['pending_bytes'] / 2**20:.2f} MiB, "
        f"{lg['pending_bytes'] / n:.1f} B a point |"
    )
    growth = (lg["peak_kb"] - lg["rss_before_kb"]) * mib
    how = "VmHWM, reset via clear_refs" if lg["hwm_reset"] else "VmRSS sampled every 20 ms"
    print(f"| process RSS before logging | {lg['rss_before_kb'] * mib:.1f} MiB |")
    for mark in lg["checkpoints"]:
        print(
            f"| peak RSS growth after {mark['points']:,} points ({how}); spool .db + .db-wal "
            f"| {(mark['peak_kb'] - lg['rss_before_kb']) * mib:.1f} MiB; "
            f"{mark['db_bytes'] / 2**20:.2f} + {mark['wal_bytes'] / 2**20:.2f} MiB |"
        )
    after = (lg["rss_after_kb"] - lg["rss_before_kb"]) * mib
    print(f"| RSS growth after logging | {after:.1f} MiB |")
    ref = d.reference["objects_bytes"] / 2**20
    print(
        f"| for scale: the same points as MLflow `Metric` objects in memory (tracemalloc) "
        f"| {ref:.1f} MiB (peak RSS growth = {growth / ref:.2f}x of it) |"
    )
    print(
        f"| outage: server killed → answering again (logging, then a restart of "
        f"{d.restart:.1f} s) | {d.killed_to_answer:.1f} s |"
    )
    print(
        f"| server answering → run closed (delivery of the backlog; spool_grace "
        f"{d.closed['grace']:g} s) | {d.answer_to_closed:.1f} s |"
    )
    print(
        f"| points on the server after | {d.kept:,}/{n:,} ({100 * d.kept / n:.1f} %)"
        f"{'' if d.distinct == d.kept else f', {d.distinct:,} distinct steps'} |"
    )
    print(f"| final status | {d.status} |")
    print(f"| spool databases left behind | {len(d.closed['left'])} |")
    ours = [w for w in d.closed["warnings"] if "michelangelo" in w.lower() or "spool" in w.lower()]
    for w in ours:
        print(f"\n- warning in the task: {w}")


def print_targets(results: dict[int, list[Measure]], down: Down) -> None:
    """Each measure beside the issue's target."""
    rows: list[tuple[str, str, str, bool]] = []
    for n, measures in results.items():
        sdk = next(r for r in measures if r.mode == "sdk")
        base = next(r for r in measures if r.mode == "log_batch")
        if sdk.call_ns is not None:
            med = statistics.median(sdk.call_ns) / 1000
            p99 = quantile(sdk.call_ns, 0.99) / 1000
            rows.append((f"one log_metric call, median ({n:,}-point runs)", f"{med:,.0f} µs",
                         f"≤ {TARGETS['call_median_us']:g} µs",
                         med <= TARGETS["call_median_us"]))  # fmt: skip
            rows.append((f"one log_metric call, p99 ({n:,}-point runs)", f"{p99:,.0f} µs",
                         f"≤ {TARGETS['call_p99_us']:g} µs",
                         p99 <= TARGETS["call_p99_us"]))  # fmt: skip
        if sdk.cpu_ns is not None:
            cpu99 = quantile(sdk.cpu_ns, 0.99) / 1000
            rows.append((f"one log_metric call, p99 of the thread's CPU time ({n:,})",
                         f"{cpu99:,.0f} µs", f"(≤ {TARGETS['call_p99_us']:g} µs)",
                         cpu99 <= TARGETS["call_p99_us"]))  # fmt: skip
        if sdk.control_ns is not None:
            c50 = statistics.median(sdk.control_ns) / 1000
            c99 = quantile(sdk.control_ns, 0.99) / 1000
            rows.append((f"control: a pure-Python call of {c50:,.0f} µs median, p99 "
                         "(the machine's load alone)", f"{c99:,.0f} µs", "-", True))  # fmt: skip
        goal = TARGETS["ratio"].get(n) if isinstance(TARGETS["ratio"], dict) else None
        if goal is not None:
            ratio = sdk.seconds / base.seconds
            rows.append((f"{n:,} log_metric calls to closed vs log_batch (medians)",
                         f"{ratio:.2f}x", f"≤ {goal:g}x", ratio <= goal))  # fmt: skip
            if sdk.pair_ratios:
                pairs = statistics.median(sdk.pair_ratios)
                each = ", ".join(f"{r:.2f}" for r in sdk.pair_ratios)
                rows.append((f"{n:,} points: median of the interleaved pairs' ratios ({each})",
                             f"{pairs:.2f}x", f"≤ {goal:g}x", pairs <= goal))  # fmt: skip
    lg = down.logged
    growth = (lg["peak_kb"] - lg["rss_before_kb"]) / 1024
    per_point = lg["spool_bytes"] / down.points
    rows += [
        (f"{down.points:,} points down: peak RSS growth", f"{growth:.1f} MiB",
         f"≤ {TARGETS['rss_growth_mib']:g} MiB", growth <= TARGETS["rss_growth_mib"]),
        (f"{down.points:,} points down: spool on disk a point (.db + .db-wal)",
         f"{per_point:.1f} B", f"≤ {TARGETS['bytes_per_point']:g} B",
         per_point <= TARGETS["bytes_per_point"]),
        (f"{down.points:,} points down: points on the server after", f"{down.kept:,}",
         f"{down.points:,}", down.kept == down.points),
    ]  # fmt: skip
    print("\nTargets (issue 14)\n")
    print("| Measure | measured | target | met |")
    print("|---|---:|---:|---|")
    for name, measured, target, met in rows:
        verdict = "-" if target == "-" else ("yes" if met else "**no**")
        print(f"| {name} | {measured} | {target} | {verdict} |")


def measure_all(
    server: Any, args: argparse.Namespace, root: Path, experiment: str
) -> dict[int, list[Measure]]:
    from mlflow.tracking import MlflowClient

    import michelangelo_mlflow as mm

    url = server.url
    settings = mm.Settings(tracking_uri=url, spool_dir=root / "spool")
    experiment_id = MlflowClient(url).create_experiment(experiment)
    mm.preflight(settings)  # once per process, as in a task
    log_batch(url, experiment_id, 10)  # warm up connections, imports and caches
    sdk(settings, experiment, 10)
    sdk_batch(settings, experiment, 10)
    plain(url, experiment_id, 10, "plain")
    samples: dict[str, Measure] = {}
    results: dict[int, list[Measure]] = {}
    for n in args.points:
        base: list[Measure] = []
        ours: list[Measure] = []
        for _ in range(args.repeat):  # interleaved: a load change hits both alike
            base.append(verify(url, log_batch(url, experiment_id, n)))
            ours.append(verify(url, sdk(settings, experiment, n)))
        sdk_row = median_of(ours)
        sdk_row.pair_ratios = [m.seconds / b.seconds for m, b in zip(ours, base, strict=True)]
        if sdk_row.call_ns is not None:
            sdk_row.control_ns = control(len(sdk_row.call_ns), statistics.median(sdk_row.call_ns))
        rows = [
            median_of(base),
            sdk_row,
            verify(url, sdk_batch(settings, experiment, n)),
            verify(url, plain(url, experiment_id, n, "async_buffered")),
        ]
        for mode in ("async", "plain"):
            if n <= args.sample:
                rows.append(verify(url, plain(url, experiment_id, n, mode)))
                if n == args.sample:
                    samples[mode] = rows[-1]
                continue
            if mode not in samples:
                samples[mode] = verify(url, plain(url, experiment_id, args.sample, mode))
            rows.append(extrapolate(samples[mode], n))
        results[n] = rows
    return results


def extrapolate(sample: Measure, n: int) -> Measure:
    scale = n / sample.points
    loop = sample.loop_seconds * scale if sample.loop_seconds is not None else None
    return Measure(
        sample.mode,
        n,
        sample.seconds * scale,
        loop_seconds=loop,
        call_ns=sample.call_ns,
        kept=sample.kept,
        distinct=sample.distinct,
        status=sample.status,
        extrapolated_from=sample.points,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[2_000, 20_000])
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="times the baseline and the SDK's loop are measured at each size (median)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=2_000,
        help="loops of plain and unbuffered async MLflow above this many points "
        "are measured on this many and extrapolated",
    )
    parser.add_argument("--down-points", type=int, default=100_000)
    parser.add_argument(
        "--down-grace",
        default="",
        help="spool_grace of the run with the server down (default: the SDK's, 30 s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 and 2,000 points, one repeat, a sample of 100, 2,000 down",
    )
    parser.add_argument("--down-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.down_child:
        url, experiment, n, spool_dir, grace = args.down_child
        down_child(url, experiment, int(n), spool_dir, grace)
        return
    if args.quick:
        args.points, args.repeat, args.sample, args.down_points = [200, 2_000], 1, 100, 2_000

    import mlflow

    from michelangelo_mlflow.testing import TrackingServer

    load_before = os.getloadavg()
    started = time.monotonic()
    experiment = f"bench-spool-throughput-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as tmp:
        root = Path(tmp)
        server = TrackingServer(root / "server")
        try:
            # MLflow prints a "View run" link at every run's end: not part of the report.
            with contextlib.redirect_stdout(io.StringIO()):
                server.start()
                results = measure_all(server, args, root, experiment)
        finally:
            server.stop()
        # A server of its own: a restart takes longer with a store full of the above.
        server = TrackingServer(root / "down-server")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                server.start()
                down = spool_down(server, experiment, args.down_points, root, args.down_grace)
        finally:
            server.stop()
    load_after = os.getloadavg()

    from importlib.metadata import version

    print(
        f"MLflow {mlflow.__version__} (client and server), michelangelo-mlflow "
        f"{version('michelangelo-mlflow')}, {os.cpu_count()} CPUs, 1-worker sqlite server on "
        f"loopback; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"wall time {time.monotonic() - started:.0f} s"
    )
    print(
        "`to closed`: from the first call to the run closed, including `end_run()` (which "
        "drains MLflow's async queue) and, for the SDK, the wait for the spool's delivery; "
        "`open to closed` adds opening the run (`create_run`; entering `tracking_run`). "
        "Plain MLflow runs through the SDK's installed store plugin, which passes calls for "
        "runs not tracked straight to MLflow's RestStore."
    )
    for n, rows in results.items():
        print_size(n, rows)
    print_down(down)
    print_targets(results, down)


if __name__ == "__main__":
    main()
