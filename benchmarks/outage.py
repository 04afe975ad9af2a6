"""A tracking-server outage in the middle of a task: this SDK's spool vs plain MLflow.

The task logs ``--points`` points (default 400) with plain ``mlflow.log_metric``, one
per step after 50 ms of simulated work, inside ``mm.tracking_run`` (or, as the second
baseline, inside plain ``mlflow.start_run`` with MLflow's defaults). One second after
its run started, the real local MLflow server (sqlite, 1 worker) is killed with
SIGKILL, and restarted on the same port and store so that it answers again about
``--outage`` seconds (default 20) after the kill: the time a restart takes is
measured first, and the restart is launched that much earlier. Each task runs in its
own fresh Python process (imports not timed) and is compared with the same task with
no outage, measured in the same run. Plain MLflow is capped at ``--cap`` seconds (90).

Reported per task: points on the server / logged (goal 100 %), wall time from opening
the run to the run closed and its ratio to the same task without an outage (goal for
the SDK: at most 1.1x), the longest single ``log_metric`` call, the run's final
status, duplicate metric rows (rows vs distinct steps; the sqlite store itself drops
rows identical in key, step, timestamp and value), runs in the experiment, spool
databases (``<writer>.db``) left behind, and the task's error and this SDK's warnings.
A last table sets the SDK's points and ratio beside their targets (100 %, 1.1x).

    python benchmarks/outage.py [--points 400] [--outage 20] [--cap 90] [--quick]

``--quick`` (120 points, the restart launched at the kill, so the outage lasts one
server start and may outlast the 6 s task) runs in about a minute. Timings are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = "loss"
KILL_AFTER = 1.0  # seconds after the run started


def value(step: int) -> float:
    return 1.0 / (step + 1)


# --- the task (child process) --------------------------------------------------------------
def task(mode: str, url: str, experiment: str, points: int, interval: float, cap: float) -> None:

    import mlflow

    state: dict[str, Any] = {"logged": 0, "longest": 0.0, "stalled": 0.0, "run_id": None}
    begin = time.time()

    def say(tag: str, **payload: Any) -> None:
        print(tag, json.dumps(payload), flush=True)

    def capped() -> None:
        say("result", capped=True, begin=begin, **state)
        os._exit(3)

    watchdog = threading.Timer(cap, capped)
    watchdog.daemon = True
    watchdog.start()

    def loop(run_id: str) -> None:
        state["run_id"] = run_id
        say("started", at=time.time(), run_id=run_id)
        for step in range(points):
            time.sleep(interval)  # the task's work
            before = time.perf_counter()
            mlflow.log_metric(KEY, value(step), step=step)
            took = time.perf_counter() - before
            state["longest"] = max(state["longest"], took)
            if took > 0.1:
                state["stalled"] += took
            state["logged"] = step + 1

    from _servers import run_body

    error, caught = run_body(mode, url, experiment, "task", loop)
    closed = time.time()
    watchdog.cancel()
    ours = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    left = [str(p) for p in Path.cwd().rglob("*.db")]  # the spool's <writer>.db files
    say(
        "result",
        capped=False,
        begin=begin,
        closed=closed,
        error=error,
        warnings=ours,
        left=left,
        **state,
    )


# --- the scenario (parent) -----------------------------------------------------------------
@dataclass
class Outcome:
    mode: str
    outage: bool
    result: dict[str, Any]
    exited: float  # when the task's process ended
    killed: float | None = None  # seconds after the run started
    restart_launched: float | None = None  # seconds after the kill
    answered: float | None = None  # seconds after the kill
    rows: int = 0
    distinct: int = 0
    wrong_values: int = 0
    status: str = "?"
    runs: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def wall(self) -> float:
        end = self.result.get("closed") or self.exited
        return float(end - self.result["begin"])


def scenario(
    mode: str, outage: bool, server: Any, args: argparse.Namespace, root: Path, estimate: float
) -> Outcome:
    from mlflow.tracking import MlflowClient

    experiment = f"bench-outage-{mode}-{'outage' if outage else 'none'}-{uuid.uuid4().hex[:8]}"
    workdir = root / experiment
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MICHELANGELO_"))}
    command = [
        sys.executable,
        __file__,
        "--task",
        mode,
        server.url,
        experiment,
        str(args.points),
        str(args.interval),
        str(args.cap),
    ]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=(workdir / "task.log").open("wb"),
        text=True,
        env=env,
        cwd=workdir,
    )
    assert child.stdout is not None
    lines: dict[str, dict[str, Any]] = {}
    started = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            tag, _, payload = line.partition(" ")
            if tag in ("started", "result"):
                lines[tag] = json.loads(payload)
                if tag == "started":
                    started.set()
        started.set()  # it ended (maybe without starting)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timeline: dict[str, float] = {}
    restarter: threading.Thread | None = None
    restart_error: list[BaseException] = []
    try:
        started.wait(300)
        if outage and "started" in lines:
            run_started = lines["started"]["at"]
            time.sleep(max(0.0, run_started + KILL_AFTER - time.time()))
            server.kill()
            killed = time.time()
            timeline["killed"] = killed - run_started

            def restart() -> None:
                time.sleep(max(0.0, killed + args.outage - estimate - time.time()))
                timeline["launched"] = time.time() - killed
                try:
                    server.restart()
                except BaseException as exc:  # reported below
                    restart_error.append(exc)
                timeline["answered"] = time.time() - killed

            restarter = threading.Thread(target=restart)
            restarter.start()
        try:
            child.wait(args.cap + 300)  # imports on a loaded machine are not part of the cap
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        exited = time.time()
        reader.join(10)
    finally:
        if restarter is not None:
            restarter.join()
        if child.poll() is None:
            child.kill()
    if restart_error:
        raise RuntimeError(f"the server did not come back: {restart_error[0]}")
    result = lines.get("result")
    if result is None:
        log = (workdir / "task.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the {mode} task gave no result (exit {child.returncode}):\n{log}")
    outcome = Outcome(
        mode,
        outage,
        result,
        exited,
        timeline.get("killed"),
        timeline.get("launched"),
        timeline.get("answered"),
    )
    client = MlflowClient(server.url)
    if result.get("run_id"):
        history = client.get_metric_history(result["run_id"], KEY)
        outcome.rows = len(history)
        outcome.distinct = len({m.step for m in history})
        outcome.wrong_values = sum(1 for m in history if m.value != value(m.step))
        outcome.status = client.get_run(result["run_id"]).info.status
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        outcome.runs = len(client.search_runs([found.experiment_id]))
    if child.returncode not in (0, 3) or result.get("error"):
        tail = (workdir / "task.log").read_text(errors="replace").strip().splitlines()[-5:]
        outcome.notes.append(f"the task's process exited with {child.returncode}; its log ends:")
        outcome.notes += [f"    {line}" for line in tail]
    return outcome


# --- the report ---------------------------------------------------------------------------
def print_report(outcomes: list[Outcome], args: argparse.Namespace, info: dict[str, Any]) -> None:
    print(
        f"MLflow {info['mlflow']} (client and server), michelangelo-mlflow {info['sdk']}, "
        f"{os.cpu_count()} CPUs, 1-worker sqlite server on loopback; load average "
        f"{info['load_before']:.2f} before, {info['load_after']:.2f} after; wall time "
        f"{info['wall']:.0f} s"
    )
    restart = (
        "not measured (--quick), the restart launched at the kill"
        if args.quick
        else f"{info['restart']:.1f} s (a kill and restart); outage target {args.outage:g} s, "
        f"restart launched {max(0.0, args.outage - info['restart']):.1f} s after the kill"
    )
    print(f"Server start measured first: {info['start']:.1f} s (first start); restart {restart}.")
    print(
        f"\n{args.points} points, one per {args.interval * 1000:.0f} ms of work; the server is "
        f"killed {KILL_AFTER:g} s after the run started (SIGKILL) and restarted on the same "
        "port and store\n"
    )
    print(
        "| Task | outage: killed → answering | points on server / logged | wall time (s) "
        "| ratio to no outage | longest call (ms) | in calls > 100 ms (s) | final status "
        "| duplicate rows "
        "| runs in experiment | spool left | process exit after close (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    base = {o.mode: o.wall for o in outcomes if not o.outage}
    label = {"sdk": "`mm.tracking_run` (spool)", "plain": "plain MLflow (defaults)"}
    for o in outcomes:
        r = o.result
        down = "none"
        if o.outage and o.answered is not None and o.killed is not None:
            down = f"+{o.killed:.1f} s → +{o.killed + o.answered:.1f} s ({o.answered:.1f} s)"
        wall = f"{o.wall:.1f}" + (f" (capped at {args.cap:g})" if r.get("capped") else "")
        ratio = o.wall / base[o.mode] if o.mode in base else float("nan")
        kept = f"{o.rows}/{r['logged']} ({100 * o.rows / max(1, r['logged']):.0f} %)"
        if r["logged"] != args.points:
            kept += f" of {args.points}"
        closed = r.get("closed")
        exit_after = f"{o.exited - closed:.1f}" if closed else "-"
        left = len(r.get("left") or []) if o.mode == "sdk" else "-"
        print(
            f"| {label[o.mode]}{', outage' if o.outage else ''} | {down} | {kept} | {wall} "
            f"| {ratio:.2f}x | {r['longest'] * 1000:,.0f} | {r['stalled']:.1f} | {o.status} "
            f"| {o.rows - o.distinct} "
            f"| {o.runs} | {left} | {exit_after} |"
        )
    with_outage = {o.mode: o.wall for o in outcomes if o.outage}
    if {"sdk", "plain"} <= with_outage.keys():
        print(
            f"\nWith the outage: plain MLflow's task took {with_outage['plain']:.1f} s, the "
            f"SDK's {with_outage['sdk']:.1f} s ({with_outage['plain'] / with_outage['sdk']:.2f}x)."
        )
    sdk = {o.outage: o for o in outcomes if o.mode == "sdk"}
    if {True, False} <= sdk.keys():
        hit = sdk[True]
        ratio = hit.wall / sdk[False].wall
        print("\nTargets (issue 14)\n")
        print("| Measure | measured | target | met |")
        print("|---|---:|---:|---|")
        share = 100 * hit.rows / args.points
        print(
            f"| SDK with the outage: points on the server | {hit.rows}/{args.points} "
            f"({share:.0f} %) | 100 % | {'yes' if hit.distinct == args.points else '**no**'} |"
        )
        print(
            f"| SDK with the outage: wall time vs no outage | {ratio:.2f}x | ≤ 1.1x "
            f"| {'yes' if ratio <= 1.1 else '**no**'} |"
        )
    print(
        "\nOutage columns are seconds after the run started (kill → answering again). "
        "Wall time: from opening the run (preflight and experiment lookup included) to the "
        "run closed."
    )
    for o in outcomes:
        r = o.result
        name = f"{label[o.mode]}{', outage' if o.outage else ''}"
        for text in (
            ([f"task error: {r['error']}"] if r.get("error") else [])
            + [f"warning: {w}" for w in r.get("warnings") or []]
            + ([f"{o.wrong_values} point(s) with a wrong value"] if o.wrong_values else [])
            + o.notes
        ):
            print(f"- {name}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds of work per point")
    parser.add_argument(
        "--outage",
        type=float,
        default=20.0,
        help="seconds from the kill to the server answering again",
    )
    parser.add_argument("--cap", type=float, default=90.0, help="seconds a task may take")
    parser.add_argument(
        "--quick", action="store_true", help="120 points, restart launched at the kill"
    )
    parser.add_argument("--task", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        mode, url, experiment, points, interval, cap = args.task
        task(mode, url, experiment, int(points), float(interval), float(cap))
        return
    if args.quick:
        args.points, args.outage = 120, 0.0

    from importlib.metadata import version

    import mlflow

    from michelangelo_mlflow.testing import TrackingServer

    info: dict[str, Any] = {
        "load_before": os.getloadavg()[0],
        "mlflow": mlflow.__version__,
        "sdk": version("michelangelo-mlflow"),
    }
    begun = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        root = Path(tmp)
        server = TrackingServer(root / "server")
        try:
            t = time.monotonic()
            server.start()
            info["start"] = time.monotonic() - t
            if args.quick:  # no time for another start: the restart is launched at the kill
                info["restart"] = info["start"]
            else:
                server.kill()
                t = time.monotonic()
                server.restart()
                info["restart"] = time.monotonic() - t
            outcomes = [
                scenario(mode, outage, server, args, root, info["restart"])
                for mode in ("sdk", "plain")
                for outage in (False, True)
            ]
        finally:
            server.stop()
    info["load_after"] = os.getloadavg()[0]
    info["wall"] = time.monotonic() - begun
    print_report(outcomes, args, info)


if __name__ == "__main__":
    main()
