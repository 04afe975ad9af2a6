"""Many tasks, one tracking server: N processes log 2,000 points each, all at once.

Each task is its own OS process, started from one working directory (shared by the
variant's tasks, as a pipeline's workers share one). It imports MLflow, says it is
ready, and waits; when every task is ready they are all told to go at once (imports
are not timed; this SDK's modules are compiled to bytecode first, as an installed
wheel's are, so those a run imports lazily are not compiled in the timed block). Each
task opens one run and logs ``--points`` points of one metric, one per step:

- ``sdk``: ``mlflow.log_metric`` in a loop inside ``mm.tracking_run`` (this SDK);
- ``plain``: the same loop in plain ``mlflow.start_run`` (``--skip plain`` leaves it
  out: at 32 tasks it takes over 10 minutes);
- ``async``: the same loop with MLflow's async logging
  (``mlflow.config.enable_async_logging()``), in plain ``mlflow.start_run``, with
  ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1`` (``--async-buffering``; 0 is MLflow's
  default, one ``log-batch`` request per call from a pool of 10 threads, which at 4
  tasks already exhausts a 1-worker sqlite server's connection pool);
- ``batch``: one ``MlflowClient.log_batch`` per 1,000 points in plain
  ``mlflow.start_run``: the baseline of every ratio;
- ``sdk-batch``: the baseline's calls inside ``mm.tracking_run`` (``--skip sdk-batch``
  leaves it out): what the SDK's run costs without 2,000 calls, each with MLflow's
  own fluent work and a record stored in the spool.

Servers: ``mlflow server`` on sqlite with 1 worker (MLflow's test default), and on
PostgreSQL 15 with 4 workers (``--workers 4``; ``benchmarks/_servers.py`` runs the
database). For each server and each N (``--tasks``, default 32 and 64) a fresh server
runs this SDK's tasks first, then the baselines. Its health (the median of 5 ``GET
/health`` and of 3 probe ``log_batch`` requests of 1,000 points, from this process)
is measured before the SDK's tasks, right after them, and after all variants.

With ``--outage S``, the ``sdk`` and ``batch`` variants run once more, and the server
is killed (SIGKILL to its process group) and restarted on the same port and store so
that it answers about S seconds after the kill. Each variant meets the outage at the
same point of its own work: at ``KILL_AT`` (40%) of its wall time without the outage,
measured earlier on the same server; if some task's run does not exist yet then (a run
cannot start while the server is down: the preflight fails), at the moment every
task's run exists or its process ended (a baseline task the busy server refused never
opens one). The report gives the kill's moment.

Reported per variant:

- wall time: from "go" to the last task's process ended (its exit handlers included);
- the median time from "go" to a task's run being open, to its points logged (the
  calls returned) and to its block's end;
- write requests: POST/PUT/PATCH/DELETE requests the server answered, other than
  searches, counted in the server's access log (MLflow 3's uvicorn logs one line per
  answer; a request cut off by a kill is not counted), the same a task (a plain task
  that succeeds makes 4: create, two ``log-batch``, update; one that fails makes
  fewer, so a baseline that lost tasks makes fewer requests), and the 4xx and 5xx
  answers;
- failed tasks: a non-zero exit, an exception in the task, or killed at ``--cap``;
- complete at block end: right after its ``with`` block ended, each task asks the
  server (``MlflowClient.get_metric_history``, MLflow's own REST store: the run is
  closed) how many points it has, and counts only when it has all of them; the query's
  own latency is reported (a query slower than a second may see points delivered
  after the block ended, so "complete" is then an upper bound);
- on the server at the end: after all of the variant's processes exited; duplicate
  rows (history rows minus distinct steps) and runs not FINISHED;
- idle CPU: the machine's idle (and I/O wait) share of its cores in each quarter of
  the wall time, from ``/proc/stat``: where the machine waits rather than works, a
  variant is held back by something other than CPU (the server's answers, pacing);
- the machine's CPU: the CPU seconds all its cores worked from "go" to the last
  task's end, the task processes' part of it (from "go" to their exit, interpreter
  shutdown included: their whole CPU as the harness reaps them, less each one's CPU
  at "go"; not with an outage, whose killed server is reaped too) and the rest: the
  server, its database and this harness;
- the blocks' CPU: user and system seconds of every task process (all its threads)
  from "go" to its block's end, summed over the tasks: on a node whose cores the
  server shares, the tasks' CPU is taken from the server's. In brackets, the part
  spent once the task's logging calls had returned (waiting for delivery, ending).

With ``--repeat K``, each server and N is run K times, each time on a fresh server
with this SDK's tasks first, and a last table gives each pair's ratio of wall time
(this SDK's against the baseline's on the same server) and their median: at 64 tasks
on two cores one variant's wall time varies by up to half between runs, more than the
difference a single pair is asked to show.

    python benchmarks/fanout.py [--tasks 32 64] [--points 2000] [--servers sqlite postgres]
                                [--skip plain] [--outage 15] [--cap 1800] [--repeat 1]

Each task process costs about 150 MB: the harness checks MemAvailable first. Timings
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

KEY = "loss"
BATCH = 1000  # points per log_batch (MLflow's limit per request)
KILL_AT = 0.4  # of the variant's wall time without the outage
VARIANTS = ("sdk", "plain", "async", "batch", "sdk-batch")
LABELS = {
    "sdk": "this SDK (`mm.tracking_run`)",
    "plain": "plain `log_metric` loop",
    "async": "MLflow async logging (buffered {buffering} s)",
    "batch": "`log_batch` per 1,000 (baseline)",
    "sdk-batch": "this SDK, `log_batch` per 1,000",
}
SERVERS = {"sqlite": 1, "postgres": 4}  # kind: workers
MB_PER_TASK = 200
ACCESS = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


def value(step: int) -> float:
    return 1.0 / (step + 1)


# --- the task (child process) --------------------------------------------------------------
def log_points(variant: str, run_id: str, points: int) -> None:
    import mlflow
    from mlflow.entities import Metric

    if not variant.endswith("batch"):  # "batch", "sdk-batch": log_batch per 1,000
        for step in range(points):
            mlflow.log_metric(KEY, value(step), step=step)
        return
    client = mlflow.MlflowClient()
    for start in range(0, points, BATCH):
        now = int(time.time() * 1000)
        batch = [Metric(KEY, value(s), now, s) for s in range(start, min(points, start + BATCH))]
        client.log_batch(run_id, metrics=batch)


def run_block(variant: str, url: str, experiment: str, points: int, state: dict[str, Any]) -> None:
    """The task's ``with`` block: open a run, log the points, close it."""
    import mlflow

    import michelangelo_mlflow as mm

    name = f"task-{os.getpid()}"
    if variant.startswith("sdk"):
        with mm.tracking_run(experiment, name, settings=mm.Settings(tracking_uri=url)) as run:
            state["run_id"], state["opened"] = run.info.run_id, time.time()
            log_points(variant, run.info.run_id, points)
            state["logged"], state["cpu_logged"] = time.time(), cpu()
        return
    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(experiment)
    if variant == "async":
        mlflow.config.enable_async_logging(True)
    with mlflow.start_run(run_name=name) as run:
        state["run_id"], state["opened"] = run.info.run_id, time.time()
        log_points(variant, run.info.run_id, points)
        state["logged"], state["cpu_logged"] = time.time(), cpu()


def cpu(children: bool = False) -> float:
    """User and system CPU seconds of this process so far, all its threads.

    Args:
        children: Those of this process's children that ended and were reaped instead.
    """
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def task(variant: str, url: str, experiment: str, points: int) -> None:
    import warnings

    import mlflow  # imported before "ready": imports are not timed

    import michelangelo_mlflow

    michelangelo_mlflow.tracking_run  # noqa: B018  (its modules load on first access: load them now)

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":  # the harness is gone
        sys.exit(2)
    state: dict[str, Any] = {"run_id": None, "error": None, "begin": time.time(), "cpu": cpu()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run_block(variant, url, experiment, points, state)
        except BaseException as exc:  # reported, not hidden
            state["error"] = f"{type(exc).__name__}: {exc}"[:500]
    state["ended"] = time.time()
    now = cpu()
    state["cpu_end"] = now - state.get("cpu_logged", now)  # once the calls had returned
    state["cpu_go"] = state["cpu"]  # the harness subtracts it from the process's whole CPU
    state["cpu"] = now - state["cpu"]  # the block's, all threads: imports are not counted
    state["warnings"] = sorted({f"{w.category.__name__}: {w.message}"[:300] for w in caught})
    state["seen"] = None
    if state["run_id"]:
        try:
            history = mlflow.MlflowClient(url).get_metric_history(state["run_id"], KEY)
            state["seen"] = len({m.step for m in history})
        except Exception as exc:  # the count is then unknown: not complete
            state["seen_error"] = f"{type(exc).__name__}: {exc}"[:300]
    state["queried"] = time.time()
    print("result", json.dumps(state), flush=True)
    sys.exit(1 if state["error"] else 0)


# --- the harness (parent) ------------------------------------------------------------------
@dataclass
class Outcome:
    server: str
    tasks: int
    variant: str
    outage: bool
    wall: float = 0.0
    writes: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    failed: int = 0
    complete: int = 0
    slow_queries: int = 0
    final_complete: int = 0
    duplicates: int = 0
    not_finished: int = 0
    block_median: float = 0.0
    cpu: float = 0.0  # CPU seconds of the tasks' blocks, summed
    cpu_end: float = 0.0  # of which once a task's calls had returned (its block's end)
    phases: str = ""  # median seconds from "go" to: run open / points logged / block end
    idle: str = ""  # the machine's idle CPU in % of its cores, a quarter of the wall time each
    busy: float = 0.0  # the machine's CPU seconds from "go" to the last task's end
    tasks_cpu: float = float("nan")  # of which the task processes', exits included
    outage_span: str = ""
    notes: list[str] = field(default_factory=list)


class IdleSampler(threading.Thread):
    """The machine's idle CPU (``/proc/stat``), sampled every half second from "go"."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []  # (time, idle, total) jiffies
        self.stopped = threading.Event()

    @staticmethod
    def _read() -> tuple[float, float]:
        with open("/proc/stat") as stat:
            fields = [float(x) for x in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; all but guest time

    def run(self) -> None:
        while True:
            self.samples.append((time.time(), *self._read()))
            if self.stopped.wait(0.5):
                self.samples.append((time.time(), *self._read()))
                return

    def stop(self) -> None:
        """Take a last sample and stop."""
        self.stopped.set()
        self.join()

    def busy(self) -> float:
        """CPU seconds the machine spent working between the first and last samples."""
        (_, idle0, total0), (_, idle1, total1) = self.samples[0], self.samples[-1]
        return (total1 - total0 - (idle1 - idle0)) / os.sysconf("SC_CLK_TCK")

    def quarters(self, go: float, done: float) -> str:
        """Idle % in each quarter of ``go``..``done`` ("12 / 3 / 0 / 40").

        A quarter shorter than the sampling interval is measured over the samples
        around it (the interval's idle share).
        """
        parts = []
        for q in range(4):
            start, end = go + (done - go) * q / 4, go + (done - go) * (q + 1) / 4
            # the samples around the quarter: at least one interval of 0.5 s
            first = max((s for s in self.samples if s[0] <= start), default=self.samples[0])
            last = min((s for s in self.samples if s[0] >= end), default=self.samples[-1])
            total = last[2] - first[2]
            parts.append(f"{100 * (last[1] - first[1]) / total:.0f}" if total else "-")
        return " / ".join(parts)


def count_requests(log: Path, start: int) -> tuple[int, int, int]:
    """Write requests, 4xx and 5xx answers in the server's access log from offset ``start``."""
    with log.open("rb") as handle:
        handle.seek(start)
        text = handle.read().decode(errors="replace")
    writes = e4 = e5 = 0
    for method, path, status in ACCESS.findall(text):
        if method != "GET" and not path.split("?")[0].endswith("/search"):
            writes += 1
        e4 += status.startswith("4")
        e5 += status.startswith("5")
    return writes, e4, e5


def spawn(
    variant: str, url: str, experiment: str, n: int, args: argparse.Namespace, workdir: Path
) -> list[Any]:
    """Start ``n`` tasks in ``workdir`` and wait until each has imported MLflow."""
    points = args.points
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MICHELANGELO_"))}
    if variant == "async" and args.async_buffering:
        env["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = str(args.async_buffering)
    command = [sys.executable, __file__, "--task", variant, url, experiment, str(points)]
    children = []
    for i in range(n):
        children.append(
            subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(workdir / f"task-{i}.log").open("wb"),
                text=True,
                env=env,
                cwd=workdir,
            )
        )
    for i, child in enumerate(children):
        if child.stdout.readline().strip() != "ready":
            log = (workdir / f"task-{i}.log").read_text(errors="replace")[-2000:]
            for other in children:
                other.kill()
            raise RuntimeError(f"task {i} did not start:\n{log}")
    return children


def all_runs_open(server: Any, experiment_id: str, children: list[Any], timeout: float = 600.0):
    """Wait until every task is inside its block (its run exists) or gone.

    A baseline task the busy server refused before its run was created (the pool's
    400) never opens one: it is counted as gone when its process has ended.
    """
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        gone = sum(child.poll() is not None for child in children)
        try:
            runs = len(client.search_runs([experiment_id]))
        except Exception:  # the busy server's pool 400: ask again
            runs = 0
        if runs + gone >= len(children):
            return
        time.sleep(0.2)


def outage_thread(
    server: Any, go: float, outage: float, estimate: float, span: dict[str, Any], wait: Any,
    kill_at: float,
):  # fmt: skip
    """Kill the server ``kill_at`` s after ``go``, or once ``wait()`` returns if later;
    restart it ``outage`` s after the kill (a run cannot start while the server is down:
    the preflight fails)."""

    def run() -> None:
        wait()
        time.sleep(max(0.0, go + kill_at - time.time()))
        server.kill()
        killed = time.time()
        time.sleep(max(0.0, killed + outage - estimate - time.time()))
        try:
            server.restart()
        except BaseException as exc:  # reported by the harness
            span["error"] = exc
        span.update(killed=killed - go, answered=time.time() - go)

    thread = threading.Thread(target=run, name="outage")
    thread.start()
    return thread


Ended = list[tuple[int | None, dict[str, Any] | None]]  # exit code and result, per task


def wait_all(children: list[Any], deadline: float) -> Ended:
    """Each task's exit code and result; a task still running at ``deadline`` is killed."""
    ended = []
    for child in children:
        try:
            out, _ = child.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
        result = None
        for line in out.splitlines():
            tag, _, payload = line.partition(" ")
            if tag == "result":
                result = json.loads(payload)
        ended.append((child.returncode, result))
    return ended


def run_variant(
    server: Any, kind: str, n: int, variant: str, args: argparse.Namespace, root: Path,
    outage: float | None = None, estimate: float = 0.0, kill_at: float = 0.0,
) -> Outcome:  # fmt: skip
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    experiment = f"fanout-{kind}-{n}-{variant}{'-outage' if outage else ''}-{uuid.uuid4().hex[:6]}"
    experiment_id = client.create_experiment(experiment)
    workdir = root / experiment
    workdir.mkdir()
    children = spawn(variant, server.url, experiment, n, args, workdir)
    log_start = server.log_path.stat().st_size
    sampler = IdleSampler()
    sampler.start()
    reaped = cpu(children=True)
    go = time.time()
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    span: dict[str, Any] = {}
    try:
        killer = None
        if outage is not None:
            wait = lambda: all_runs_open(server, experiment_id, children)  # noqa: E731
            killer = outage_thread(server, go, outage, estimate, span, wait, kill_at)
        ended = wait_all(children, go + args.cap)
    finally:
        for child in children:
            child.kill()
    done = time.time()
    if killer is not None:
        killer.join()
        if "error" in span:
            raise RuntimeError(f"the server did not come back: {span['error']}")
    outcome = Outcome(kind, n, variant, outage is not None, wall=done - go)
    sampler.stop()
    outcome.idle = sampler.quarters(go, done)
    outcome.busy = sampler.busy()
    if outage is None:  # the killed server is a reaped child too
        since_go = sum(r.get("cpu_go", 0.0) for _, r in ended if r)
        outcome.tasks_cpu = cpu(children=True) - reaped - since_go
    outcome.writes, outcome.errors_4xx, outcome.errors_5xx = count_requests(
        server.log_path, log_start
    )
    if span:
        outcome.outage_span = f"+{span['killed']:.0f} s → +{span['answered']:.0f} s"
    tally_tasks(outcome, ended, go, args.points)
    tally_server(outcome, client, experiment_id, args.points)
    return outcome


def tally_tasks(outcome: Outcome, ended: Ended, go: float, points: int) -> None:
    notes: dict[str, int] = {}
    blocks = []
    phases: dict[str, list[float]] = {"opened": [], "logged": []}
    for code, result in ended:
        problem = None
        if result is None:
            problem = f"no result (exit {code})"
        elif result["error"] or code != 0:
            problem = result["error"] or f"exit {code}"
        if problem:
            outcome.failed += 1
            notes[f"failed: {problem}"] = notes.get(f"failed: {problem}", 0) + 1
        if result is None:
            continue
        blocks.append(result["ended"] - go)
        outcome.cpu += result.get("cpu", 0.0)
        outcome.cpu_end += result.get("cpu_end", 0.0)
        for phase, times in phases.items():
            if result.get(phase):
                times.append(result[phase] - go)
        if result["seen"] == points and not result["error"]:
            outcome.complete += 1
            outcome.slow_queries += result["queried"] - result["ended"] > 1.0
        for text in result["warnings"] + ([result["seen_error"]] if "seen_error" in result else []):
            short = re.sub(r"[0-9a-f]{32}", "<run>", text)[:200]
            notes[short] = notes.get(short, 0) + 1
    outcome.block_median = statistics.median(blocks) if blocks else float("nan")
    medians = [statistics.median(t) if t else float("nan") for t in phases.values()]
    outcome.phases = " / ".join(f"{m:.1f}" for m in [*medians, outcome.block_median])
    outcome.notes += [f"{count} task(s): {text}" for text, count in sorted(notes.items())]


def tally_server(outcome: Outcome, client: Any, experiment_id: str, points: int) -> None:
    try:
        runs = client.search_runs([experiment_id], max_results=1000)
        for run in runs:
            history = client.get_metric_history(run.info.run_id, KEY)
            steps = {m.step for m in history}
            outcome.duplicates += len(history) - len(steps)
            outcome.final_complete += len(steps) == points
            outcome.not_finished += run.info.status != "FINISHED"
    except Exception as exc:  # a wedged server: reported, the other variants still run
        outcome.notes.append(f"the server did not answer the final count: {exc}"[:300])


def probe(server: Any) -> dict[str, float]:
    """Median latency (ms) of ``GET /health`` and of a 1,000-point ``log_batch``."""
    import requests
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    health = []
    for _ in range(5):
        begin = time.perf_counter()
        requests.get(f"{server.url}/health", timeout=120).raise_for_status()
        health.append(time.perf_counter() - begin)
    client = MlflowClient(server.url)
    batches = []
    try:
        found = client.get_experiment_by_name("probe")
        experiment_id = found.experiment_id if found else client.create_experiment("probe")
        run_id = client.create_run(experiment_id).info.run_id
        for i in range(3):
            now = int(time.time() * 1000)
            metrics = [Metric("probe", 1.0, now, i * BATCH + s) for s in range(BATCH)]
            begin = time.perf_counter()
            client.log_batch(run_id, metrics=metrics)
            batches.append(time.perf_counter() - begin)
        client.set_terminated(run_id)
    except Exception as exc:  # a wedged server: the probe's latency is then unknown
        print(f"  probe log_batch failed: {exc}"[:300], file=sys.stderr, flush=True)
        batches = [float("nan")]
    return {
        "health": 1000 * statistics.median(health),
        "log_batch": 1000 * statistics.median(batches),
    }


def check_memory(n: int) -> None:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    available = int(fields["MemAvailable"].split()[0]) // 1024
    if available < n * MB_PER_TASK:
        raise SystemExit(
            f"{n} tasks need about {n * MB_PER_TASK} MB and {available} MB are available: "
            "run fewer --tasks"
        )


def progress(o: Outcome) -> None:
    print(
        f"  {o.server} N={o.tasks} {o.variant}{' outage' if o.outage else ''}: "
        f"{o.wall:.1f} s, {o.writes} writes, {o.failed} failed, {o.complete} complete at "
        f"block end, {o.final_complete} at the end, blocks' CPU {o.cpu:.1f} s "
        f"({o.cpu_end:.1f} s after the calls)",
        file=sys.stderr,
        flush=True,
    )


def one_server(
    kind: str, n: int, args: argparse.Namespace, root: Path, repeat: int = 0
) -> dict[str, Any]:
    """A fresh server: the SDK's tasks first, then the baselines, then the outage variants."""
    from _servers import mlflow_server

    check_memory(n)
    found: dict[str, Any] = {
        "kind": kind, "tasks": n, "repeat": repeat, "outcomes": [], "health": {}
    }  # fmt: skip
    begin = time.monotonic()
    directory = root / f"server-{kind}-{n}-{repeat}"
    with mlflow_server(kind, directory, workers=SERVERS[kind]) as server:
        found["start"] = time.monotonic() - begin
        found["health"]["before"] = probe(server)
        for variant in [v for v in VARIANTS if v not in args.skip]:
            found["outcomes"].append(run_variant(server, kind, n, variant, args, root))
            progress(found["outcomes"][-1])
            if variant == "sdk":
                found["health"]["after the SDK's tasks"] = probe(server)
        found["health"]["after all variants"] = probe(server)
        if args.outage is not None:
            server.kill()
            begin = time.monotonic()
            server.restart()
            estimate = found["restart"] = time.monotonic() - begin
            walls = {o.variant: o.wall for o in found["outcomes"]}
            for variant in [v for v in ("sdk", "batch") if v not in args.skip]:
                kill_at = KILL_AT * walls[variant]
                outcome = run_variant(
                    server, kind, n, variant, args, root, args.outage, estimate, kill_at
                )
                found["outcomes"].append(outcome)
                progress(outcome)
    return found


# --- the report ---------------------------------------------------------------------------
def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def print_group(found: dict[str, Any], args: argparse.Namespace) -> None:
    kind, n = found["kind"], found["tasks"]
    server = f"{kind}, {SERVERS[kind]} worker{'s' if SERVERS[kind] > 1 else ''}"
    if args.repeat > 1:
        server += f" (#{found['repeat'] + 1})"
    for outage in (False, True):
        rows = [o for o in found["outcomes"] if o.outage == outage]
        if not rows:
            continue
        base = next((o for o in rows if o.variant == "batch"), None)
        for o in rows:
            split = "-" if outage else f"{o.tasks_cpu:.0f} / {o.busy - o.tasks_cpu:.0f}"
            name = LABELS[o.variant].format(buffering=args.async_buffering)
            name += f", outage {o.outage_span}" if outage else ""
            print(
                f"| {server} | {n} | {name} | {o.wall:.1f} | {ratio(o.wall, base and base.wall)} "
                f"| {o.writes:,} | {o.writes / n:.2f} | {ratio(o.writes, base and base.writes)} "
                f"| {o.errors_4xx} / {o.errors_5xx} | {o.failed} "
                f"| {o.complete}/{n}"
                + (f" ({o.slow_queries} slow)" if o.slow_queries else "")
                + f" | {o.final_complete}/{n} | {o.duplicates} | {o.not_finished} "
                f"| {o.phases} | {o.cpu:.1f} ({o.cpu_end:.1f}) | {o.idle} "
                f"| {o.busy:.0f} / {split} |"
            )


def print_report(groups: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]):
    print(
        f"MLflow {info['mlflow']} (client and server), michelangelo-mlflow {info['sdk']} "
        f"({info['commit']}), {os.cpu_count()} CPUs, load average {info['load_before']:.2f} "
        f"before, {info['load_after']:.2f} after; {args.points:,} points per task; "
        f"total {info['wall']:.0f} s\n"
    )
    print(
        "| Server | Tasks | Variant | Wall (s) | vs batch | Write requests | A task | vs batch "
        "| 4xx / 5xx answers | Failed tasks | Complete at block end | On server at the end "
        "| Duplicate rows | Runs not FINISHED | Median s to run open / logged / block end "
        "| Blocks' CPU (s) (after the calls) | Idle CPU % by quarter of the wall time "
        "| Machine's CPU (s): all / the tasks' to their exit / the rest |"
    )
    print("|---|---:|---|" + "---:|" * 15)
    for found in groups:
        print_group(found, args)
    print("\nServer health (median ms of 5 `GET /health` / 3 probe `log_batch` of 1,000 points):")
    for found in groups:
        health = "; ".join(
            f"{when}: {h['health']:.0f} / {h['log_batch']:.0f}"
            for when, h in found["health"].items()
        )
        extra = f"; restart {found['restart']:.1f} s" if "restart" in found else ""
        label = f" #{found['repeat'] + 1}" if args.repeat > 1 else ""
        print(
            f"- {found['kind']} N={found['tasks']}{label}: {health} "
            f"(server start {found['start']:.1f} s{extra})"
        )
    if args.repeat > 1:
        print_pairs(groups)
    print("\nWhat the tasks said (warnings and errors, counted per task):")
    for found in groups:
        for o in found["outcomes"]:
            for note in o.notes[:8]:
                label = f"{o.variant}{' outage' if o.outage else ''}"
                print(f"- {found['kind']} N={found['tasks']} {label}: {note}")


def print_pairs(groups: list[dict[str, Any]]) -> None:
    """Each repeat's ratio of this SDK's wall time to the baseline's, and their median."""
    print(
        "\nThis SDK against `log_batch`, each pair on its own fresh server "
        "(wall-time ratios in run order; failed tasks and tasks complete at block end summed):\n"
    )
    print("| Server | Tasks | Outage | Wall-time ratios | Median | SDK failed / complete "
          "| Baseline failed / complete |")  # fmt: skip
    print("|---|---:|---|---|---:|---:|---:|")
    keys = sorted({(g["kind"], g["tasks"]) for g in groups})
    for kind, n in keys:
        runs = [g for g in groups if (g["kind"], g["tasks"]) == (kind, n)]
        for outage in (False, True):
            pairs = []
            for found in runs:
                by = {o.variant: o for o in found["outcomes"] if o.outage == outage}
                if "sdk" in by and "batch" in by:
                    pairs.append((by["sdk"], by["batch"]))
            if not pairs:
                continue
            ratios = [sdk.wall / base.wall for sdk, base in pairs]
            sdk_sum = (sum(s.failed for s, _ in pairs), sum(s.complete for s, _ in pairs))
            base_sum = (sum(b.failed for _, b in pairs), sum(b.complete for _, b in pairs))
            print(
                f"| {kind} | {n} | {'yes' if outage else 'no'} "
                f"| {', '.join(f'{r:.2f}x' for r in ratios)} | {statistics.median(ratios):.2f}x "
                f"| {sdk_sum[0]} / {sdk_sum[1]}/{n * len(pairs)} "
                f"| {base_sum[0]} / {base_sum[1]}/{n * len(pairs)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[32, 64], help="task counts")
    parser.add_argument("--points", type=int, default=2000, help="points per task")
    parser.add_argument(
        "--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS), help="servers"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        choices=["plain", "async", "sdk-batch"],
        default=[],
        help="variants to leave out",
    )
    parser.add_argument(
        "--outage", type=float, default=None, help="also run sdk and batch with an outage of S s"
    )
    parser.add_argument(
        "--async-buffering",
        type=int,
        default=1,
        help="MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS for the async variant (0: MLflow's default)",
    )
    parser.add_argument("--cap", type=float, default=1800.0, help="seconds a variant may take")
    parser.add_argument(
        "--repeat", type=int, default=1, help="fresh servers per server kind and N (pairs)"
    )
    parser.add_argument("--task", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: pass 1 or more (fresh servers a kind and N)")
    if args.task:
        variant, url, experiment, points = args.task
        task(variant, url, experiment, int(points))
        return

    import logging
    import signal
    from importlib.metadata import version

    # A SIGTERM (a timeout, Ctrl-C in a pipeline) unwinds: the servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "View run" lines
    # The harness's own reads give up on a wedged server in minutes, not MLflow's 15.
    os.environ.update(MLFLOW_HTTP_REQUEST_TIMEOUT="60", MLFLOW_HTTP_REQUEST_MAX_RETRIES="2")

    import mlflow

    import michelangelo_mlflow

    # The tasks read this SDK's bytecode, as from an installed wheel (pip and uv compile
    # it when they install). A source checkout run under PYTHONDONTWRITEBYTECODE (as on
    # the CI machines here) would otherwise compile the modules a run imports lazily
    # (the spool's replay, 2 to 6 ms) inside every task's timed block. MLflow's is
    # compiled by the installer already.
    compileall.compile_dir(Path(michelangelo_mlflow.__file__).parent, quiet=1)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
        cwd=Path(__file__).parent,
    ).stdout.strip()  # fmt: skip
    info: dict[str, Any] = {
        "load_before": os.getloadavg()[0],
        "mlflow": mlflow.__version__,
        "sdk": version("michelangelo-mlflow"),
        "commit": commit or "?",
    }
    begun = time.monotonic()
    groups = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
            for kind in args.servers:
                for n in args.tasks:
                    for repeat in range(args.repeat):
                        groups.append(one_server(kind, n, args, Path(tmp), repeat))
    finally:  # what was measured, even when a later server failed
        info["load_after"] = os.getloadavg()[0]
        info["wall"] = time.monotonic() - begun
        print_report(groups, args, info)


if __name__ == "__main__":
    main()
