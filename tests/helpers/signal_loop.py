"""SIGTERM or SIGINT at a random moment of a tight logging loop, many times in one process.

Run as ``python -m tests.helpers.signal_loop <iterations> <seed>`` with
``MLFLOW_TRACKING_URI`` set. SIGTERM's earlier handler is a no-op here, so the process
lives on after each run is ended KILLED. Prints one JSON object a run:
``{"run_id", "signal", "returned"}``, where ``returned`` counts the calls that returned.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading

import mlflow

import michelangelo_mlflow as mm
from michelangelo_mlflow._signals import Terminated


def main() -> None:
    iterations, seed = int(sys.argv[1]), int(sys.argv[2])
    chance = random.Random(seed)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the process survives SIGTERM
    for _ in range(iterations):
        signum = chance.choice([signal.SIGTERM, signal.SIGINT])
        delay = chance.uniform(0.0, 0.03)
        returned, run_id = 0, ""
        try:
            with mm.tracking_run("signals") as run:
                run_id = run.info.run_id
                timer = threading.Timer(delay, os.kill, (os.getpid(), signum))
                timer.start()
                while True:
                    mlflow.log_metric("loss", 0.5, step=returned, timestamp=1000 + returned)
                    returned += 1
        except (Terminated, KeyboardInterrupt):
            pass
        timer.join()
        print(
            json.dumps({"run_id": run_id, "signal": int(signum), "returned": returned}), flush=True
        )


if __name__ == "__main__":
    main()
