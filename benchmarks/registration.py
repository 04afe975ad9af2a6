"""Dual registration (MLflow + Michelangelo over gRPC) against MLflow-only registration.

Starts a real local ``mlflow server`` (sqlite, one worker) and the in-process
Michelangelo Model API (``michelangelo_mlflow.testing.ModelApiServer``, real gRPC with
the official stubs), logs ``--n`` + 1 small scikit-learn models in one run, then
registers ``--n`` times (default 20) with each of:

- ``mlflow.register_model(info.model_uri, name)`` (the baseline), and
- ``mm.register_model(info, name, namespace=…, kind=…)``, MLflow and Michelangelo,

the first model each time under a new registered model name (``new name``: version
1), and the others one by one under one name per tool (``existing name``: versions
2, 3 …, each of another model, as a retrained model is). The calls of both tools are
interleaved, so that both see the same machine. The table
shows the median time per call, the ratio to MLflow-only, and the round trips of one
call: HTTP requests to the tracking server (counted by a hook on
``requests.Session.send``, which every MLflow REST call goes through) and gRPC calls
(counted by the Model API server). ``--trace`` prints the requests of one call of each.

    python benchmarks/registration.py [--n 20] [--trace]

Goal: ``mm.register_model`` at most 2.0x ``mlflow.register_model``. Timings are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import requests

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import ModelApiServer, TrackingServer

NAMESPACE = "bench"


class Requests:
    """Counts (and records) the HTTP requests every ``requests.Session`` sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._send = requests.Session.send

    @contextlib.contextmanager
    def installed(self) -> Iterator[Requests]:
        original = self._send
        counter = self

        def send(session: requests.Session, request: Any, **kwargs: Any) -> Any:
            path = str(request.url).split("/api/", 1)[-1].split("?", 1)[0]
            counter.sent.append(f"{request.method} {path}")
            return original(session, request, **kwargs)

        requests.Session.send = send  # type: ignore[method-assign]
        try:
            yield self
        finally:
            requests.Session.send = original  # type: ignore[method-assign]


def log_models(settings: mm.Settings, count: int) -> list[Any]:
    """``count`` tiny scikit-learn models in one finished tracked run; their ``ModelInfo``."""
    from sklearn.linear_model import LogisticRegression

    with mm.tracking_run("registration-benchmark", settings=settings):
        mlflow.log_metric("auc", 0.9)
        model = LogisticRegression().fit([[0.0], [1.0], [0.2], [0.9]], [0, 1, 0, 1])
        return [mlflow.sklearn.log_model(model, name=f"model-{i}") for i in range(count)]


def measure(
    call: Callable[[Any, str], object], info: Any, name: str, counter: Requests, api: ModelApiServer
) -> tuple[float, list[str], list[str]]:
    """Time one call; the HTTP requests and gRPC calls it made."""
    sent, calls = len(counter.sent), len(api.calls)
    start = time.perf_counter()
    call(info, name)
    elapsed = time.perf_counter() - start
    return elapsed, counter.sent[sent:], [c.method for c in api.calls[calls:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20, help="registrations per tool and row")
    parser.add_argument("--trace", action="store_true", help="print one call's requests")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as root,
        TrackingServer(Path(root)) as server,
        ModelApiServer(namespaces=[NAMESPACE]) as api,
        contextlib.redirect_stderr(io.StringIO()),  # MLflow's "Created version …" lines
    ):
        rows = run(server, api, args.n)
    report(rows, args.n, args.trace)


Rows = dict[tuple[str, str], list[tuple[float, list[str], list[str]]]]


def run(server: TrackingServer, api: ModelApiServer, n: int) -> Rows:
    """Register ``n`` times per tool and case, interleaved; the samples."""
    settings = mm.Settings(tracking_uri=server.url, api_server=api.address, namespace=NAMESPACE)
    first, *others = log_models(settings, n + 1)
    mlflow.set_tracking_uri(server.url)  # the baseline's configuration
    tools: dict[str, Callable[[Any, str], object]] = {
        "mlflow.register_model": lambda info, name: mlflow.register_model(info.model_uri, name),
        "mm.register_model": lambda info, name: mm.register_model(
            info, name, kind="binary_classification", settings=settings
        ),
    }
    for tool, call in tools.items():  # warm up: imports, connections, preflight
        call(first, f"warm-{tool.split('.')[0]}")
    counter = Requests()
    rows: Rows = {}
    same = {tool: f"same-{tool.split('.')[0]}-{uuid.uuid4().hex[:6]}" for tool in tools}
    with counter.installed():
        for i in range(n):
            for tool, call in tools.items():
                new = f"new-{tool.split('.')[0]}-{uuid.uuid4().hex[:6]}-{i}"
                rows.setdefault(("new name", tool), []).append(
                    measure(call, first, new, counter, api)
                )
                rows.setdefault(("existing name", tool), []).append(
                    measure(call, others[i], same[tool], counter, api)
                )
    return rows


def report(rows: Rows, n: int, trace: bool) -> None:
    print(f"Registration, median of {n} calls each (goal: mm <= 2.0x mlflow)\n")
    print("| Registered model | Call | median (ms) | ratio | HTTP requests | gRPC calls |")
    print("|---|---|---:|---:|---:|---:|")
    for case in ("new name", "existing name"):
        baseline = statistics.median(t for t, _, _ in rows[(case, "mlflow.register_model")])
        for tool in ("mlflow.register_model", "mm.register_model"):
            samples = rows[(case, tool)]
            median = statistics.median(t for t, _, _ in samples)
            http = statistics.median(len(h) for _, h, _ in samples)
            grpc = statistics.median(len(g) for _, _, g in samples)
            print(
                f"| {case} | `{tool}` | {median * 1000:.0f} | {median / baseline:.2f}x "
                f"| {http:g} | {grpc:g} |"
            )
    if trace:
        for (case, tool), samples in rows.items():
            _, http, grpc = samples[-1]
            print(f"\n{tool}, {case}:")
            for line in [*http, *(f"gRPC {m}" for m in grpc)]:
                print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
