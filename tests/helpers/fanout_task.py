"""One task of the fan-out tests (run as a subprocess, many at once, from one directory).

Usage: python tests/helpers/fanout_task.py TRACKING_URI EXPERIMENT POINTS INTERVAL

Imports MLflow and this SDK, prints "ready", waits for a line on stdin ("go"), then
logs POINTS points of ``loss`` with ``mlflow.log_metric`` in its own
``mm.tracking_run``, sleeping INTERVAL seconds (the task's work) before each. Right
after the block ends it asks the server for the run's history (MLflow's own REST
store: the run is closed) and prints one line,
``result {"run_id": ..., "error": ..., "seen": ..., "warnings": [...]}``, where
``seen`` is how many distinct steps the server had then. Exits 1 when the block raised.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

import mlflow

import michelangelo_mlflow as mm


def value(step: int) -> float:
    """The value logged at ``step``."""
    return 1.0 / (step + 1)


def main(url: str, experiment: str, points: int, interval: float) -> int:
    print("ready", flush=True)
    sys.stdin.readline()
    result: dict[str, Any] = {"run_id": None, "error": None, "seen": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mm.tracking_run(experiment, settings=mm.Settings(tracking_uri=url)) as run:
                result["run_id"] = run.info.run_id
                for step in range(points):
                    time.sleep(interval)
                    mlflow.log_metric("loss", value(step), step=step)
        except BaseException as exc:  # reported to the test, which fails on it
            result["error"] = f"{type(exc).__name__}: {exc}"
    result["warnings"] = [f"{w.category.__name__}: {w.message}"[:300] for w in caught]
    if result["run_id"]:
        history = mlflow.MlflowClient(url).get_metric_history(result["run_id"], "loss")
        result["seen"] = len({m.step for m in history})
    print("result", json.dumps(result), flush=True)
    return 1 if result["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
