"""Start-to-end overhead of a tracked run vs a plain mlflow.start_run()/end_run().

Same process, same real local MLflow server (sqlite, 1 worker), preflight cached,
interleaved repetitions; prints medians and the ratio to the plain baseline.

    python benchmarks/run_overhead.py [--repeat 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import mlflow

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, TrackingServer(root) as server:
        settings = mm.Settings(tracking_uri=server.url)
        pipeline = mm.Settings(
            tracking_uri=server.url, namespace="ml-team", pipeline_run_name="bench-pipeline"
        )

        def plain() -> None:
            mlflow.start_run()
            mlflow.end_run()

        def tracked() -> None:
            with mm.tracking_run("bench", run_name="tracked", settings=settings):
                pass

        def tracked_in_pipeline() -> None:
            with mm.tracking_run("bench", run_name="task", settings=pipeline):
                pass

        os.environ["MLFLOW_TRACKING_URI"] = server.url
        mlflow.set_experiment("bench")
        mm.preflight(settings)  # cached for the process, as in a task after its first run
        for fn in (plain, tracked, tracked_in_pipeline):  # warm up connections and caches
            fn()
        samples: dict[str, list[float]] = {"plain": [], "tracked": [], "pipeline": []}
        for _ in range(args.repeat):
            samples["plain"].append(timed(plain))
            samples["tracked"].append(timed(tracked))
            samples["pipeline"].append(timed(tracked_in_pipeline))
    base = statistics.median(samples["plain"])
    rows = [
        ("plain `mlflow.start_run()` / `end_run()`", samples["plain"]),
        ("`tracking_run()` (notebook / script)", samples["tracked"]),
        ("`tracking_run()` in a pipeline (task key lookup)", samples["pipeline"]),
    ]
    print(f"\nStart-to-end time of one empty run, median of {args.repeat} (same process)\n")
    print("| Run | median ms | p90 ms | ratio to plain |")
    print("|---|---:|---:|---:|")
    for label, values in rows:
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"| {label} | {median * 1000:.1f} | {p90 * 1000:.1f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
