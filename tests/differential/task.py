"""Run one generated program as a task process: ``python task.py SPEC.json``.

The spec is ``{"mode": "plain" | "sdk", "experiment": name, "program": {...}}`` (see
``program.py``). ``plain`` runs the calls with MLflow alone (``mlflow.start_run`` and
``end_run`` with the status the block would give; SIGTERM becomes ``end_run("KILLED")``
at the same point); ``sdk`` runs them inside ``mm.tracking_run`` and stops at every
barrier until the test has injected its faults.

Protocol on stdout, one line each (written with one ``os.write``, so that lines from
threads and forked children never interleave):

- ``RUN <run_id>``: the run is open;
- ``BARRIER <k>``: stopped before step ``k``; the test answers ``go`` on stdin;
- ``RAISED <op id> <exception type>``: a call raised (the program goes on, as a
  user's ``try``/``except`` would);
- ``EXIT <exception type>``: the block's end raised;
- ``DONE``: the task returned.

Only the public API is used: ``mm.tracking_run``, ``mlflow.*`` and ``MlflowClient``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

PARAM_VALUES = {
    "lr": "0.01",
    "depth": "6",
    "optimizer": "adam",
    "pad_token_id": "0",
    "eos_token_id": "2",
    "token_pattern": r"(?u)\b\w\w+\b",
    "auth_type": "none",
}  # the same table as program.py: this script runs without the tests package


def say(line: str) -> None:
    """Write one whole line to stdout at once."""
    os.write(1, (line + "\n").encode())


def call(op: dict[str, Any], run_id: str) -> None:
    """Make one MLflow call; report it when it raises."""
    try:
        _CALLS[op["op"]](op, run_id)
    except Exception as exc:
        say(f"RAISED {op['id']} {type(exc).__name__}")


def _metric(op: dict[str, Any], run_id: str) -> None:
    value, step, ts = op["value"], op["step"], op["ts"]
    if op["numpy"]:
        value, step, ts = np.float64(value), np.int64(step), np.int64(ts)
    if op["api"] == "fluent":
        mlflow.log_metric(op["key"], value, step=step, timestamp=ts)
    else:
        MlflowClient().log_metric(run_id, op["key"], value, timestamp=ts, step=step)


def _param(op: dict[str, Any], run_id: str) -> None:
    if op["api"] == "fluent":
        mlflow.log_param(op["key"], PARAM_VALUES[op["key"]])
    else:
        MlflowClient().log_param(run_id, op["key"], PARAM_VALUES[op["key"]])


def _tag(op: dict[str, Any], run_id: str) -> None:
    if op["api"] == "fluent":
        mlflow.set_tag(op["key"], op["value"])
    else:
        MlflowClient().set_tag(run_id, op["key"], op["value"])


def _delete_tag(op: dict[str, Any], run_id: str) -> None:
    if op["api"] == "fluent":
        mlflow.delete_tag(op["key"])
    else:
        MlflowClient().delete_tag(run_id, op["key"])


def _batch(op: dict[str, Any], run_id: str) -> None:
    MlflowClient().log_batch(
        run_id,
        metrics=[Metric(k, v, ts, step) for k, v, ts, step in op["metrics"]],
        params=[Param(k, PARAM_VALUES[k]) for k in op["params"]],
        tags=[RunTag(k, v) for k, v in op["tags"]],
    )


def _artifact(op: dict[str, Any], run_id: str) -> None:
    text = op["id"] * op["size"]
    if op["api"] == "fluent":
        mlflow.log_text(text, op["path"])
    else:
        MlflowClient().log_text(run_id, text, op["path"])


def _set_terminated(op: dict[str, Any], run_id: str) -> None:
    MlflowClient().set_terminated(run_id, "FINISHED")  # as Lightning's finalize() does


_CALLS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "metric": _metric,
    "param": _param,
    "tag": _tag,
    "delete_tag": _delete_tag,
    "batch": _batch,
    "artifact": _artifact,
    "set_terminated": _set_terminated,
}


def _chunk(args: tuple[list[dict[str, Any]], str]) -> None:
    ops, run_id = args
    for op in ops:
        call(op, run_id)


def concurrent(step: dict[str, Any], run_id: str) -> None:
    """The main thread, a second thread and forked children log at once; all are joined.

    The children are forked before the second thread starts: a child forked while that
    thread is inside an HTTP call inherits its held locks and hangs, with plain MLflow
    as with anything else, so such a program compares nothing.
    """
    thread = threading.Thread(target=_chunk, args=((step["thread"], run_id),))
    child = step["child"]
    pid = 0
    if child is not None and child["how"] == "fork":
        pid = os.fork()
        if pid == 0:
            try:
                for chunk in child["chunks"]:
                    _chunk((chunk, run_id))
            finally:
                os._exit(0)
    pool = None
    if child is not None and child["how"] == "pool":
        pool = multiprocessing.get_context("fork").Pool(2)  # workers forked here
    thread.start()
    if pool is not None:
        with pool:  # __exit__ terminates the workers, as user code does
            result = pool.map_async(_chunk, [(chunk, run_id) for chunk in child["chunks"]])
            _chunk((step["main"], run_id))
            result.get(timeout=300)
        pool.join()
    else:
        _chunk((step["main"], run_id))
    if pid:
        os.waitpid(pid, 0)
    thread.join()


def nested(step: dict[str, Any], open_run: Callable[..., AbstractContextManager[Any]]) -> None:
    """A child run of the active run, with calls of its own.

    ``open_run`` is how the task opens runs (``mm.tracking_run`` with the SDK);
    ``"via": "mlflow"`` opens it with ``mlflow.start_run`` either way, as a library
    called inside a tracked run does.
    """
    opener = mlflow.start_run if step["via"] == "mlflow" else open_run
    with opener(run_name="nested-run", nested=True) as run:
        for op in step["ops"]:
            call(op, run.info.run_id)


def barrier(index: int, program: dict[str, Any], mode: str) -> bool:
    """Stop for the test's faults (sdk), then take the program's signal here, if it says so.

    Returns:
        ``True`` when the plain run must stop here, ended KILLED.
    """
    if mode == "sdk":
        say(f"BARRIER {index}")
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("the test went away")
    if program["signal_at"] != index:
        return False
    if mode == "plain" and program["signal"] in ("SIGTERM", "SIGKILL"):
        mlflow.end_run("KILLED")  # what the SDK (with sync) must leave after the signal
        return True
    # SIGINT in both modes (KeyboardInterrupt: plain MLflow ends the run FAILED), and
    # SIGTERM or SIGKILL with the SDK: the process ends by it.
    os.kill(os.getpid(), signal.Signals[program["signal"]])
    time.sleep(120)
    say(f"SURVIVED {program['signal']}")
    return True


def body(program: dict[str, Any], mode: str, run_id: str, open_run: Any) -> None:
    """The block's contents: the steps with their barriers, then the ending."""
    for index, step in enumerate(program["steps"]):
        if barrier(index, program, mode):
            return
        if step["op"] == "concurrent":
            concurrent(step, run_id)
        elif step["op"] == "nested":
            nested(step, open_run)
        else:
            call(step, run_id)
    if barrier(len(program["steps"]), program, mode):
        return
    if program["ending"] == "raise":
        raise ValueError("the task failed")
    if program["ending"] == "end_failed":
        mlflow.end_run("FAILED")


@contextmanager
def _plain_run(experiment: str) -> Iterator[Any]:
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="main-run") as run:
        yield run


def main() -> None:
    """Run the spec named on the command line."""
    with open(sys.argv[1]) as file:
        spec = json.load(file)
    mode, program = spec["mode"], spec["program"]
    if mode == "plain":
        opened: AbstractContextManager[Any] = _plain_run(spec["experiment"])
        open_run: Any = mlflow.start_run
    else:
        import michelangelo_mlflow as mm

        opened = mm.tracking_run(spec["experiment"], run_name="main-run")
        open_run = mm.tracking_run
    try:
        with opened as run:
            say(f"RUN {run.info.run_id}")
            body(program, mode, run.info.run_id, open_run)
    except Exception as exc:
        say(f"EXIT {type(exc).__name__}")
    say("DONE")


if __name__ == "__main__":
    main()
