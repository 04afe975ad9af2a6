"""Pipeline parent-run convergence: 8 task processes start at once, vs 1 alone.

Each starter imports MLflow and runs the preflight, waits at a file barrier, then
opens a tracked run with MICHELANGELO_MLFLOW_PIPELINE_RUN=nested against one real
local MLflow server and reports when its run had started. Prints the time from the
barrier to the last starter's run (the convergence time) and its ratio to a single
starter measured in the same run, and checks that exactly one parent survived.

    python benchmarks/parent_convergence.py [--starters 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def starter(barrier: Path) -> None:
    import mlflow.tracking  # noqa: F401  -- imports and the preflight are not the election

    import michelangelo_mlflow as mm

    mm.preflight()
    (barrier / f"ready-{os.getpid()}").touch()
    while not (go := barrier / "go").exists():
        time.sleep(0.005)
    with mm.tracking_run("bench-pipeline", run_name="task") as run:
        started = time.time()
    print(f"result {run.info.run_id} {started - float(go.read_text())}", flush=True)


def round_trip(url: str, starters: int, root: Path, label: str) -> float:
    barrier = root / label
    barrier.mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": url,
        "MA_NAMESPACE": "bench",
        "MA_PIPELINE_RUN_NAME": label,
        "MICHELANGELO_MLFLOW_PIPELINE_RUN": "nested",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--starter", str(barrier)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(starters)
    ]
    while len(list(barrier.glob("ready-*"))) < starters:
        time.sleep(0.01)
    (barrier / "go").write_text(repr(time.time()))
    results: dict[str, float] = {}
    for process in processes:
        out, _ = process.communicate(timeout=300)
        line = next(ln for ln in out.splitlines() if ln.startswith("result "))
        _, run_id, seconds = line.split()
        results[run_id] = float(seconds)
    check_one_parent(url, label, set(results))
    return max(results.values())


def check_one_parent(url: str, label: str, task_runs: set[str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("bench-pipeline")
    assert experiment is not None
    survivors = client.search_runs(
        [experiment.experiment_id],
        f"tags.`michelangelo.role` = 'pipeline' and tags.`michelangelo.pipeline_run` = '{label}'",
    )
    assert len(survivors) == 1, f"{label}: {len(survivors)} parents survived"
    parents = {client.get_run(r).data.tags["mlflow.parentRunId"] for r in task_runs}
    assert parents == {survivors[0].info.run_id}, f"{label}: tasks under {parents}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starters", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--starter", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.starter:
        starter(args.starter)
        return

    from michelangelo_mlflow.testing import TrackingServer

    with tempfile.TemporaryDirectory() as tmp, TrackingServer(Path(tmp) / "server") as server:
        single, crowd = [], []
        for i in range(args.rounds):
            single.append(round_trip(server.url, 1, Path(tmp), f"single-{i}"))
            crowd.append(round_trip(server.url, args.starters, Path(tmp), f"crowd-{i}"))
    base = statistics.median(single)
    print(f"\nParent-run convergence, median of {args.rounds} rounds (one real local server)\n")
    print("| Starters at once | barrier → last task run started, s | ratio to 1 starter |")
    print("|---:|---:|---:|")
    print(f"| 1 | {base:.2f} | 1.00x |")
    crowded = statistics.median(crowd)
    print(f"| {args.starters} | {crowded:.2f} | {crowded / base:.2f}x |")
    print(f"\nEvery round: exactly one parent left, all {args.starters} task runs under it.")


if __name__ == "__main__":
    main()
