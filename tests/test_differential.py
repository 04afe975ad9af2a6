"""Never worse than plain MLflow: the same calls, with and without the SDK, store the same.

Hypothesis generates programs (``tests/differential/program.py``): MLflow calls from a
task's main thread, a second thread and forked children (a fork ``Pool`` used with
``with``, or ``os.fork()``), with a nested run, a third party's ``set_terminated``, a
user's ``mlflow.end_run("FAILED")``, artifacts, numpy values and steps, and explicit
timestamps everywhere. Each program runs twice, as real task processes
(``tests/differential/task.py``):

- **plain**: MLflow alone against a healthy ``mlflow server``;
- **sdk**: inside ``mm.tracking_run`` against another real server, behind a
  fault-injecting proxy, with a fault switched on and off at points Hypothesis picks
  (the server SIGKILLed and restarted on its port and store, 503s, a hang, the spool's
  disk full) and SIGTERM to the task at another. A task cut short is followed by
  ``michelangelo-mlflow sync``, as an operator would.

Then both servers' states are compared: runs (parent and child), statuses, params,
tags, metric points (key, step, timestamp, value, duplicates counted) and artifacts.
A SIGTERM truncates the program: the plain run stops at the same point with
``end_run("KILLED")``. Every difference allowed is in ``ALLOWED_DIFFERENCES``.

CI runs a fixed-seed profile; ``MM_SOAK=1`` (``nox -s soak``) runs many more examples.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings

from michelangelo_mlflow.testing import TrackingServer
from tests._proxy import FaultProxy
from tests.differential.harness import (
    Faults,
    Outcome,
    run_task,
    server_state,
    sync,
    task_environment,
)
from tests.differential.program import (
    Program,
    children,
    cut_short,
    metric,
    programs,
    written,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Allowed:
    """One documented difference between plain MLflow and this SDK, with its reason."""

    what: str
    reason: str


ALLOWED_DIFFERENCES = {
    "sdk-tags": Allowed(
        "Run tags under `michelangelo.` exist only with the SDK.",
        "The SDK's own tags (provenance, pipeline, error type and message, spool "
        "counters such as `michelangelo.spool.dropped_points`); they are its purpose.",
    ),
    "mlflow-system-tags": Allowed(
        "MLflow's system tags (`mlflow.user`, `mlflow.source.name`, `mlflow.source.type`, "
        "`mlflow.source.git.commit`, `mlflow.runName`, `mlflow.parentRunId`) are not "
        "compared as tags.",
        "MLflow derives them from the process (script, user, git); the run name and the "
        "parent/child structure they carry are compared on their own.",
    ),
    "refusal-at-run-end": Allowed(
        "A call the server refuses (`delete_tag` of a tag never set) raises at the call "
        "with plain MLflow; with the SDK it may return, and the refusal is named when "
        "the block ends (`TrackingError`).",
        "The call returns once the record is durable in the spool; the server's answer "
        "comes later. The refused record is set aside alone and nothing else is lost. "
        "When the call was in a tracked run nested in another, the outer block goes on "
        "and its end raises the `TrackingError`, after its run got the block's status.",
    ),
    "run-creation": Allowed(
        "A run created while the server is down, hangs or answers 503 is not compared.",
        "The server assigns a run's id, so creating a run needs the server: it fails after "
        "MLflow's own retry budget, as in plain MLflow against the same server. Records and "
        "statuses of runs that exist are what the spool keeps.",
    ),
    "times": Allowed(
        "Run start and end times are not compared.",
        "They are wall-clock times of two different executions.",
    ),
    "sigterm-killed": Allowed(
        "After SIGTERM the run holds the calls that returned before it, and is KILLED.",
        "Plain MLflow dies at the signal and leaves the run RUNNING; the expected state is "
        "plain MLflow's run of the same prefix ended with `end_run('KILLED')`.",
    ),
    "sigkill-killed": Allowed(
        "After SIGKILL and `michelangelo-mlflow sync`, the run holds the calls that "
        "returned before it, and is KILLED.",
        "Plain MLflow leaves the run RUNNING forever; the SDK's calls are durable once they "
        "return, and `sync` gives a run without a final status KILLED.",
    ),
    "sigint-killed": Allowed(
        "After SIGINT (KeyboardInterrupt) the run is KILLED; plain MLflow's "
        "`with mlflow.start_run()` ends it FAILED.",
        "The SDK tells an interrupted task from a failed one, as documented for "
        "`tracking_run`; everything else is compared as is.",
    ),
}


def ignored_tag(key: str) -> bool:
    """Tags left out of the comparison (``sdk-tags``, ``mlflow-system-tags``)."""
    return key.startswith(("michelangelo.", "mlflow."))


_SOAK = os.environ.get("MM_SOAK") == "1"
_COMMON = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the fixtures used are session-wide
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
CI = settings(_COMMON, max_examples=6, derandomize=True)  # with the examples: about 4 minutes
SOAK = settings(_COMMON, max_examples=400)
PROFILE = SOAK if _SOAK else CI
DISK_PROFILE = settings(PROFILE, max_examples=100 if _SOAK else 2)


@dataclass
class SdkSide:
    """The SDK's server, the proxy in front of it, and where the spool may live."""

    server: TrackingServer
    proxy: FaultProxy


@pytest.fixture(scope="module")
def sdk_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkSide]:
    """A server of this module's own, which examples kill and restart, behind a proxy."""
    with TrackingServer(tmp_path_factory.mktemp("differential-sdk")) as server:
        with FaultProxy(server.url) as proxy:
            yield SdkSide(server, proxy)


@pytest.fixture(scope="module")
def spool_disk() -> Iterator[Path]:
    """A 8 MiB tmpfs for the spool, which an example fills up; skipped where mount is refused."""
    mountpoint = Path(tempfile.mkdtemp(prefix="mm-diff-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs for the full-disk fault: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


class Differs(AssertionError):
    """The SDK's server (or task) ended up other than plain MLflow's."""


# One exception type per kind, so that Hypothesis shrinks and reports each kind apart.
KINDS = ("raised", "signal", "exit", "runs", "status", "metrics", "params", "tags", "artifacts")
DIFFERS = {kind: type(f"{kind.capitalize()}Differ", (Differs,), {}) for kind in KINDS}


def differences(
    program: Program, expected: list[Any], actual: list[Any], sdk: Outcome, plain: Outcome
) -> list[tuple[str, str]]:
    """What differs beyond ``ALLOWED_DIFFERENCES``: ``(kind, what)``, in ``KINDS`` order."""
    found = []
    # `refusal-at-run-end`: the SDK may return where plain MLflow raised, never the reverse.
    for op_id, kind in sorted(sdk.raised.items()):
        if op_id not in plain.raised:
            found.append(("raised", f"call {op_id} raised {kind} with the SDK only"))
    if any("SURVIVED" in line for line in sdk.lines):
        found.append(("signal", "the task survived its signal"))
    ended_by_raise = program["ending"] == "raise" and program["signal_at"] is None
    refused_later = bool(set(plain.raised) - set(sdk.raised))  # `refusal-at-run-end`
    named_at_end = sdk.exit_error == "TrackingError" and refused_later
    if ended_by_raise and sdk.exit_error != "ValueError" and not named_at_end:
        found.append(("exit", f"the block's ValueError became {sdk.exit_error}"))
    if program["signal_at"] is not None and program["signal"] == "SIGINT":
        expected = [_interrupted(run) for run in expected]  # `sigint-killed`
    runs = [(r["name"], r["parent"]) for r in expected]
    if runs != [(r["name"], r["parent"]) for r in actual]:
        found.append(("runs", "the runs (name, parent) differ"))
    else:
        for plain_run, sdk_run in zip(expected, actual, strict=True):
            for field in KINDS[4:]:
                if plain_run[field] != sdk_run[field]:
                    found.append((field, f"{field} of {plain_run['name']} differ"))
    if found:
        found.append(("state", f"plain MLflow: {expected}\nwith the SDK: {actual}"))
    return found


def _interrupted(run: dict[str, Any]) -> dict[str, Any]:
    if run["parent"] is None and run["status"] == "FAILED":
        return {**run, "status": "KILLED"}
    return run


def check(program: Program, plain_uri: str, side: SdkSide, spool_root: Path | None) -> None:
    """Run ``program`` both ways and assert the two servers hold the same."""
    experiment = f"differential-{uuid.uuid4().hex[:12]}"
    work = Path(tempfile.mkdtemp(prefix="mm-diff-"))
    spool = (spool_root or work) / f"spool-{experiment}"
    faults = Faults(side.server, side.proxy, spool_root)
    sdk_env = task_environment(
        MLFLOW_TRACKING_URI=side.proxy.url,
        MICHELANGELO_MLFLOW_SPOOL_DIR=str(spool),
        MICHELANGELO_MLFLOW_SPOOL_GRACE="3",
        MICHELANGELO_MLFLOW_FLUSH_INTERVAL="0.2",
    )
    try:
        with ThreadPoolExecutor(1) as pool:
            plain_run = pool.submit(
                run_task,
                {"mode": "plain", "experiment": experiment, "program": program},
                work / "plain",
                task_environment(MLFLOW_TRACKING_URI=plain_uri),
            )
            sdk = run_task(
                {"mode": "sdk", "experiment": experiment, "program": program},
                work / "sdk",
                sdk_env,
                faults,
            )
            plain = plain_run.result()
        if plain.exit_error not in (None, "ValueError"):  # the program's own ValueError
            raise RuntimeError(f"the plain task failed: {plain.lines}\n{plain.stderr}")
        synced = sync(side.proxy.url, spool, work / "sdk") if cut_short(program) else None
        expected = server_state(plain_uri, experiment, ignored_tag)
        actual = server_state(side.server.url, experiment, ignored_tag)
        found = differences(program, expected, actual, sdk, plain)
        if found:
            raise DIFFERS[found[0][0]](_report(found, sdk, plain, synced))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)


def _report(
    found: list[tuple[str, str]],
    sdk: Outcome,
    plain: Outcome,
    synced: subprocess.CompletedProcess[str] | None,
) -> str:
    lines = [what for _, what in found]
    lines.append(f"sdk task said: {sdk.lines} (exit {sdk.returncode})")
    lines.append(f"plain task said: {plain.lines} (exit {plain.returncode})")
    if synced is not None:
        lines.append(
            f"sync (exit {synced.returncode}): {synced.stdout[-1500:]}{synced.stderr[-1500:]}"
        )
    lines.append(f"sdk stderr tail: {sdk.stderr[-2500:]}")
    return "\n".join(lines)


# Each case of issue 14 that this test must keep fixed, as an explicit example.
_POINTS = [[metric(s, api="client") for s in range(k, k + 5)] for k in (0, 5)]
_NEVER_SET = {"op": "delete_tag", "api": "fluent", "key": "main.t3"}
_LR = {"op": "param", "api": "fluent", "key": "lr"}


@PROFILE
@example(program=written(children("pool", *_POINTS)))  # fork Pool children lose points
@example(program=written(children("fork", *_POINTS)))
@example(program=written(metric(1), ending="end_failed"))  # end_run("FAILED") overwritten
@example(program=written(_NEVER_SET, metric(1), _LR))  # a refusal blocks the rest
@example(program=written(metric(3, numpy=True)))  # numpy steps raise
# Lightning's finalize() ends the run, then the task is killed:
@example(program=written({"op": "set_terminated"}, metric(1), signal_at=2))
@example(program=written({"op": "set_terminated"}, metric(1), signal_at=2, signal="SIGKILL"))
@example(program=written({"op": "param", "api": "fluent", "key": "pad_token_id"}))  # redacted
# An artifact kept while the server was down waited out the run's grace in MLflow's own
# upload retries, though the server answered again:
@example(
    program=written(
        {"op": "artifact", "api": "fluent", "path": "main/a0.txt", "size": 1},
        fault={"kind": "kill", "start": 0, "end": 1},
    )
)
# A refusal in a nested tracked run once ended the outer block (the param never came):
@example(program=written({"op": "nested", "via": "sdk", "ops": [_NEVER_SET]}, _LR))
@given(program=programs())
def test_the_sdk_stores_what_plain_mlflow_stores(
    program: Program, tracking_server: TrackingServer, sdk_side: SdkSide
) -> None:
    assume(not creates_a_run_while_the_server_is_away(program))  # `run-creation`
    check(program, tracking_server.url, sdk_side, None)


def creates_a_run_while_the_server_is_away(program: Program) -> bool:
    """Whether a nested run is created while a server fault is on (``run-creation``)."""
    fault = program["fault"]
    if fault is None or fault["kind"] == "disk":
        return False
    return any(
        step["op"] == "nested" and fault["start"] <= index < fault["end"]
        for index, step in enumerate(program["steps"])
    )


@DISK_PROFILE
# The spool's disk is full when the task starts, and until after the run's first calls:
@example(program=written(metric(1), _LR, metric(2), fault={"kind": "disk", "start": -1, "end": 2}))
@given(program=programs(fault_kinds=("disk",)))
def test_a_full_spool_disk_changes_nothing(
    program: Program, tracking_server: TrackingServer, sdk_side: SdkSide, spool_disk: Path
) -> None:
    check(program, tracking_server.url, sdk_side, spool_disk)


def _params_of(ops: list[dict[str, Any]]) -> set[str]:
    keys = set()
    for op in ops:
        if op["op"] == "param":
            keys.add(op["key"])
        elif op["op"] == "batch":
            keys.update(op["params"])
    return keys


@settings(max_examples=200, deadline=None, database=None)
@given(program=programs())
def test_concurrent_writers_never_share_a_param_key(program: Program) -> None:
    """Two writers of one param at once race in MLflow's server (a 400 for one of them)."""
    for step in program["steps"]:
        if step["op"] != "concurrent":
            continue
        actors = [step["main"], step["thread"], *((step["child"] or {}).get("chunks", []))]
        seen: set[str] = set()
        for ops in actors:
            keys = _params_of(ops)
            assert not keys & seen, f"two writers of {keys & seen} at once in {step}"
            seen |= keys
