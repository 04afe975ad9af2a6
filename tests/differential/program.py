"""Generated programs: sequences of MLflow calls from a task's threads and forked children.

A program is plain JSON (``dict``), so that ``task.py`` runs it in a fresh process:

- ``steps``: what the task's main thread does in the run, in order. A step is a call
  (``metric``, ``param``, ``tag``, ``delete_tag``, ``batch``, ``artifact``), a third
  party's ``set_terminated`` of the run, a ``nested`` child run with calls of its own,
  or one ``concurrent`` section: calls from the main thread, from a second thread and
  from forked children (a ``multiprocessing`` fork ``Pool`` used with ``with``, which
  terminates its workers, or a bare ``os.fork()`` that ends with ``os._exit``), all
  joined before the next step.
- ``ending``: how the block ends: ``ok`` (FINISHED), ``raise`` (the block raises:
  FAILED) or ``end_failed`` (the user calls ``mlflow.end_run("FAILED")`` in the block).
- ``signal_at``: ``None``, or the barrier (before step ``k``; ``len(steps)``: after the
  last step) at which the task process gets ``signal`` (``SIGTERM``, ``SIGINT`` or
  ``SIGKILL``).
- ``fault``: ``None``, or a fault ``{"kind", "start", "end"}`` switched on at barrier
  ``start`` (``-1``: before the task starts) and off at barrier ``end``
  (``len(steps) + 1``: after the task exited).

Every value is explicit (steps, timestamps, values), and keys are chosen so that the
server's final state does not depend on how the threads and processes interleave: tag
keys and artifact paths belong to one actor each (the main thread, the second thread,
each chunk of the forked children), a param key always has the same value, and in a
``concurrent`` section each actor logs params of its own keys: MLflow's server looks a
run's params up and then inserts the new ones, so two writers of one key at once can
both find it missing, and the second insert fails its whole request (an
``IntegrityError``, answered 400), whichever that is. So plain MLflow run twice stores
the same state, and any difference is the SDK's.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

Op = dict[str, Any]
Program = dict[str, Any]

METRIC_KEYS = ("loss", "acc", "grad/norm")
# A param key always has the same value, so that concurrent writers never conflict.
# Tokenizer and vectorizer hyperparameters are real params (issue 14), not secrets.
PARAM_VALUES = {
    "lr": "0.01",
    "depth": "6",
    "optimizer": "adam",
    "pad_token_id": "0",
    "eos_token_id": "2",
    "token_pattern": r"(?u)\b\w\w+\b",
    "auth_type": "none",
}
ALL_PARAMS = tuple(sorted(PARAM_VALUES))
# The param keys of each actor of a concurrent section (see the module's docstring).
ACTOR_PARAMS = {
    "main": ("depth", "lr"),
    "thread": ("optimizer", "pad_token_id"),
    "child0": ("eos_token_id", "token_pattern"),
    "child1": ("auth_type",),
}
TIMESTAMP_0 = 1_700_000_000_000
FAULT_KINDS = ("kill", "503", "hang")

_values = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
_steps = st.integers(0, 10**6)
_timestamps = st.integers(0, 10**9).map(lambda n: TIMESTAMP_0 + n)


def _metric(api: str) -> st.SearchStrategy[Op]:
    return st.fixed_dictionaries(
        {
            "op": st.just("metric"),
            "api": st.just(api),
            "key": st.sampled_from(METRIC_KEYS),
            "value": _values,
            "step": _steps,
            "ts": _timestamps,
            "numpy": st.booleans(),
        }
    )


def _batch(actor: str, params: tuple[str, ...]) -> st.SearchStrategy[Op]:
    metric = st.tuples(st.sampled_from(METRIC_KEYS), _values, _timestamps, _steps)
    tag = st.tuples(st.integers(0, 2).map(lambda j: f"{actor}.t{j}"), st.sampled_from("abc"))
    return st.fixed_dictionaries(
        {
            "op": st.just("batch"),
            "metrics": st.lists(metric, max_size=3),
            "params": st.lists(st.sampled_from(params), max_size=2, unique=True),
            "tags": st.lists(tag, max_size=2, unique_by=lambda t: t[0]),
        }
    )


def calls(
    actor: str, apis: tuple[str, ...], params: tuple[str, ...] = ALL_PARAMS
) -> st.SearchStrategy[Op]:
    """One MLflow call by ``actor`` (its tag keys are its own), through one of ``apis``.

    Its params are logged under ``params`` (all keys, unless it runs alongside others).

    ``fluent`` is ``mlflow.*`` on the active run; ``client`` is ``MlflowClient()``
    with the run's id, as a library or a forked child would call it.
    """
    api = st.sampled_from(apis)
    tag_key = st.integers(0, 2).map(lambda j: f"{actor}.t{j}")
    return st.one_of(
        api.flatmap(_metric),
        st.fixed_dictionaries({"op": st.just("param"), "api": api, "key": st.sampled_from(params)}),
        st.fixed_dictionaries(
            {"op": st.just("tag"), "api": api, "key": tag_key, "value": st.sampled_from("xyz")}
        ),
        # t3 is never set by anyone: plain MLflow raises at the call.
        st.fixed_dictionaries(
            {
                "op": st.just("delete_tag"),
                "api": api,
                "key": st.integers(0, 3).map(lambda j: f"{actor}.t{j}"),
            }
        ),
        _batch(actor, params),
        st.fixed_dictionaries(
            {
                "op": st.just("artifact"),
                "api": api,
                "path": st.integers(0, 1).map(lambda j: f"{actor}/a{j}.txt"),
                "size": st.integers(1, 64),
            }
        ),
    )


def _concurrent() -> st.SearchStrategy[Op]:
    def chunk(actor: str) -> st.SearchStrategy[list[Op]]:
        return st.lists(calls(actor, ("client",), ACTOR_PARAMS[actor]), max_size=5)

    # Each chunk is its own actor: two pool workers run their chunks at once, so two
    # chunks writing one tag or artifact path would leave whichever came last, with
    # plain MLflow as with the SDK, and a comparison of the two would compare a race.
    chunks = st.one_of(st.tuples(chunk("child0")), st.tuples(chunk("child0"), chunk("child1"))).map(
        list
    )
    return st.fixed_dictionaries(
        {
            "op": st.just("concurrent"),
            "main": st.lists(calls("main", ("fluent", "client"), ACTOR_PARAMS["main"]), max_size=4),
            "thread": st.lists(calls("thread", ("client",), ACTOR_PARAMS["thread"]), max_size=5),
            "child": st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {
                        "how": st.sampled_from(["pool", "fork"]),
                        "chunks": chunks,
                    }
                ),
            ),
        }
    )


def _nested() -> st.SearchStrategy[Op]:
    return st.fixed_dictionaries(
        {
            "op": st.just("nested"),
            # mm.tracking_run(nested=True), or mlflow.start_run(nested=True) as a library does
            "via": st.sampled_from(["sdk", "mlflow"]),
            "ops": st.lists(calls("nested", ("fluent", "client")), max_size=4),
        }
    )


@st.composite
def programs(draw: st.DrawFn, fault_kinds: tuple[str, ...] = FAULT_KINDS) -> Program:
    """A program with its faults: calls, at most one of each special step, an ending."""
    steps: list[Op] = draw(st.lists(calls("main", ("fluent", "client")), max_size=6))
    for special in (_concurrent(), _nested(), st.just({"op": "set_terminated"})):
        if draw(st.booleans()):
            steps.insert(draw(st.integers(0, len(steps))), draw(special))
    last = len(steps)
    fault = None
    with_fault: bool = draw(st.booleans())
    if fault_kinds and with_fault:
        kind = draw(st.sampled_from(fault_kinds))
        # A full disk may be full before the task starts (-1); the server must be up then,
        # or the SDK's preflight refuses to open the run.
        start = draw(st.integers(-1 if kind == "disk" else 0, last))
        fault = {
            "kind": kind,
            "start": start,
            "end": draw(st.integers(start + 1, last + 1)),
        }
    program: Program = {
        "steps": steps,
        "ending": draw(st.sampled_from(["ok", "raise", "end_failed"])),
        "signal_at": draw(st.one_of(st.none(), st.integers(0, last))),
        "signal": draw(st.sampled_from(["SIGTERM", "SIGINT", "SIGKILL"])),
        "fault": fault,
    }
    _number(program)
    return program


def _number(program: Program) -> None:
    """Give every call an ``id`` (``o0``, ``o1``, ...) that the task reports errors by."""
    counter = itertools.count()

    def walk(ops: list[Op]) -> None:
        for op in ops:
            op["id"] = f"o{next(counter)}"
            if op["op"] == "nested":
                walk(op["ops"])
            elif op["op"] == "concurrent":
                walk(op["main"])
                walk(op["thread"])
                for chunk in (op["child"] or {}).get("chunks", []):
                    walk(chunk)

    walk(program["steps"])


def cut_short(program: Program) -> bool:
    """Whether the task cannot end its run itself: a signal, or a fault still on at exit."""
    fault = program["fault"]
    return program["signal_at"] is not None or (
        fault is not None and fault["end"] > len(program["steps"])
    )


def written(
    *steps: Op,
    ending: str = "ok",
    signal_at: int | None = None,
    signal: str = "SIGTERM",
    fault: dict[str, Any] | None = None,
) -> Program:
    """A program written by hand, for explicit examples (``@example``)."""
    written: Program = {
        "steps": [dict(step) for step in steps],
        "ending": ending,
        "signal_at": signal_at,
        "signal": signal,
        "fault": fault,
    }
    _number(written)
    return written


def metric(step: int, *, api: str = "fluent", numpy: bool = False, key: str = "loss") -> Op:
    """A metric call whose value and timestamp follow from its step."""
    return {
        "op": "metric",
        "api": api,
        "key": key,
        "value": step / 10,
        "step": step,
        "ts": TIMESTAMP_0 + step,
        "numpy": numpy,
    }


def children(how: str, *chunks: list[Op]) -> Op:
    """A concurrent step in which only forked children (``pool`` or ``fork``) log."""
    return {"op": "concurrent", "main": [], "thread": [], "child": {"how": how, "chunks": chunks}}
