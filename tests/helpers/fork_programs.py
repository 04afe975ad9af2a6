"""Programs that log from forked, spawned and forkserver children, with or without the SDK.

Run as ``python -m tests.helpers.fork_programs <program> <sdk|plain> <experiment>`` with
``MLFLOW_TRACKING_URI`` set; prints the run id of the top-level run on its last line.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

WORKERS = 4
POINTS = 50


def log_points(run_id: str, worker: int) -> int:
    client = MlflowClient()
    for step in range(POINTS):
        client.log_metric(run_id, f"w{worker}", float(step), step=step, timestamp=1000 + step)
    return worker


def log_and_exit_at_once(run_id: str) -> None:
    log_points(run_id, 9)
    os._exit(0)  # no atexit, no courier left to finish: the parent must deliver these


@contextmanager
def plain_run(experiment: str) -> Iterator[Any]:
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        yield run


def run_in(mode: str, experiment: str) -> AbstractContextManager[Any]:
    if mode == "plain":
        return plain_run(experiment)
    import michelangelo_mlflow as mm

    return mm.tracking_run(experiment)


def pool(run_id: str) -> None:
    """A fork Pool in a `with` block: its __exit__ terminates the workers (SIGTERM)."""
    context = multiprocessing.get_context("fork")
    with context.Pool(WORKERS) as workers:
        assert sorted(workers.starmap(log_points, [(run_id, w) for w in range(WORKERS)])) == [
            0, 1, 2, 3,
        ]  # fmt: skip


def child_exits_at_once(run_id: str) -> None:
    pid = os.fork()
    if pid == 0:
        log_and_exit_at_once(run_id)
    os.waitpid(pid, 0)
    log_points(run_id, 0)


def child_opens_its_own_run(run_id: str) -> None:
    pid = os.fork()
    if pid == 0:
        import michelangelo_mlflow as mm

        code = 1
        try:
            with mm.tracking_run(sys.argv[3] + "-child", run_name="child") as child:
                for step in range(POINTS):
                    mlflow.log_metric("child", float(step), step=step, timestamp=1000 + step)
                print(f"child-run {child.info.run_id}", flush=True)
            code = 0
        finally:
            os._exit(code)
    log_points(run_id, 0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status


def child_terminated_while_waiting(run_id: str) -> None:
    """A child whose main thread waits on a lock forever is ended by SIGTERM (Pool.terminate).

    The child logs first, so that the SDK's courier thread runs in it too: a SIGTERM the
    kernel gave that thread would leave the waiting main thread waiting.
    """
    held = multiprocessing.get_context("fork").Lock()
    held.acquire()
    pid = os.fork()
    if pid == 0:
        log_points(run_id, 0)
        default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        print(f"child SIGTERM default: {default}", flush=True)
        held.acquire()  # never given: only a signal ends this
        os._exit(3)
    time.sleep(3)  # the child has logged and waits
    for _ in range(20):
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("the child outlived 20 SIGTERMs")
    assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM, status


def started_child(method: str) -> Callable[[str], None]:
    def program(run_id: str) -> None:
        context = multiprocessing.get_context(method)
        processes = [context.Process(target=log_points, args=(run_id, w)) for w in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
            assert process.exitcode == 0, process.exitcode

    return program


PROGRAMS: dict[str, Callable[[str], None]] = {
    "pool": pool,
    "exit-at-once": child_exits_at_once,
    "own-run": child_opens_its_own_run,
    "terminate-waiting-child": child_terminated_while_waiting,
    "spawn": started_child("spawn"),
    "forkserver": started_child("forkserver"),
}


def main() -> None:
    program, mode, experiment = sys.argv[1:4]
    start = time.monotonic()
    with run_in(mode, experiment) as run:
        PROGRAMS[program](run.info.run_id)
    print(f"seconds {time.monotonic() - start:.2f}", flush=True)
    print(run.info.run_id, flush=True)


if __name__ == "__main__":
    main()
