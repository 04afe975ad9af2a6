"""Time to a clear error for each failure case: plain MLflow defaults vs this SDK.

Every case runs in its own fresh Python process (imports excluded from the timing),
plain MLflow and michelangelo-mlflow side by side, all cases concurrently. Plain
MLflow's multi-minute cases are capped (``--cap``, default 60 s) and reported as
``> cap``. Prints a markdown table.

    python benchmarks/preflight_failures.py [--cap 60]

Needs the dev dependencies (``mlflow[auth]``, scikit-learn); the version-skew case
also needs the MLflow 2.22 virtualenv the compatibility tests build
(``pytest tests/compat``) and is skipped without it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from michelangelo_mlflow.testing import TrackingServer

MLFLOW2_PYTHON = Path.home() / ".cache" / "michelangelo-mlflow" / "mlflow-2.22.5" / "bin" / "python"

# One timed call per process. argv[1]: "plain" or "sdk"; argv[2]: "run" or "log_model".
CHILD = r"""
import json, os, sys, threading, time, warnings
warnings.simplefilter("ignore")
import mlflow
mode, action, cap = sys.argv[1], sys.argv[2], float(sys.argv[3])
if mode == "sdk":
    from michelangelo_mlflow._run import tracking_run
    from michelangelo_mlflow._settings import Settings
model = None
if action == "log_model":
    from sklearn.linear_model import LinearRegression
    model = LinearRegression()
def capped():
    print(json.dumps({"seconds": None, "error": None}), flush=True)
    os._exit(0)
threading.Timer(cap, capped).start()  # the cap starts after the imports
start = time.monotonic()
try:
    if mode == "plain":
        mlflow.set_experiment("bench")
        with mlflow.start_run():
            if model is not None:
                mlflow.sklearn.log_model(model, name="model")
    else:
        with tracking_run(experiment="bench", settings=Settings()):
            if model is not None:
                mlflow.sklearn.log_model(model, name="model")
    error = None
except BaseException as exc:
    error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
print(json.dumps({"seconds": time.monotonic() - start, "error": error}), flush=True)
os._exit(0)
"""


@dataclass
class Case:
    name: str
    env: dict[str, str]
    action: str = "run"


@dataclass
class Result:
    seconds: float | None  # None: capped
    error: str | None


def run_child(mode: str, case: Case, cap: float) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MICHELANGELO_"))}
    env.update(case.env)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, mode, case.action, str(cap)],
            env=env,
            capture_output=True,
            text=True,
            timeout=cap + 600,  # imports on a loaded machine are not part of the cap
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        if os.environ.get("BENCH_DEBUG"):
            print(case.name, mode, "timed out:", exc.stdout, exc.stderr, file=sys.stderr)
        return Result(None, None)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return Result(None, f"no result: {done.stderr.strip().splitlines()[-1:]}")
    payload = json.loads(lines[-1])
    if payload["seconds"] is None:
        return Result(None, None)
    return Result(payload["seconds"], payload["error"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=60.0, help="seconds plain MLflow may take")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests._faults import AlwaysFailing, BlackHole

    root = Path(tempfile.mkdtemp(prefix="bench-"))
    servers: list[TrackingServer] = [TrackingServer(root / "auth", basic_auth=True)]
    if MLFLOW2_PYTHON.exists():
        servers.append(TrackingServer(root / "v2", python=str(MLFLOW2_PYTHON)))
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda s: s.start(), servers))
    hole, failing = BlackHole(), AlwaysFailing(503).__enter__()
    auth = servers[0]
    try:
        cases = [
            Case("closed port", {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}),
            Case("accepts, never answers", {"MLFLOW_TRACKING_URI": hole.url}),
            Case("always HTTP 503", {"MLFLOW_TRACKING_URI": failing.url}),
            Case(
                "wrong password (basic auth)",
                {
                    "MLFLOW_TRACKING_URI": auth.url,
                    "MLFLOW_TRACKING_USERNAME": "admin",
                    "MLFLOW_TRACKING_PASSWORD": "wrong",
                },
            ),
            Case("missing credentials (basic auth)", {"MLFLOW_TRACKING_URI": auth.url}),
            Case(
                "Databricks without DATABRICKS_TOKEN",
                {
                    "MLFLOW_TRACKING_URI": "databricks",
                    "DATABRICKS_HOST": f"https://127.0.0.1:{free_port()}",
                },
            ),
        ]
        if len(servers) > 1:
            cases.append(
                Case(
                    "3.x client, 2.x server: log_model",
                    {"MLFLOW_TRACKING_URI": servers[1].url},
                    action="log_model",
                )
            )
        started = time.monotonic()
        # Plain MLflow's cases mostly wait: run them all at once, and this SDK's cases
        # one after another alongside them.
        with ThreadPoolExecutor(len(cases)) as pool:
            plain = [pool.submit(run_child, "plain", case, args.cap) for case in cases]
            sdk = [run_child("sdk", case, args.cap) for case in cases]
            results = [
                r for pair in zip((f.result() for f in plain), sdk, strict=True) for r in pair
            ]
        wall = time.monotonic() - started
    finally:
        failing.__exit__(None, None, None)
        hole.__exit__(None, None, None)
        for server in servers:
            server.stop()

    print(f"MLflow client {_mlflow_version()}, cap {args.cap:.0f} s, wall time {wall:.0f} s\n")
    print("| Failure | plain MLflow | michelangelo-mlflow | speed-up | michelangelo-mlflow error |")
    print("|---|---|---|---|---|")
    for i, case in enumerate(cases):
        plain, sdk = results[2 * i], results[2 * i + 1]
        print(
            f"| {case.name} | {_time(plain, args.cap)} | {_time(sdk, args.cap)} | "
            f"{_ratio(plain, sdk, args.cap)} | {_short(sdk.error)} |"
        )
    print("\nPlain MLflow's errors:")
    for i, case in enumerate(cases):
        print(f"- {case.name}: {_short(results[2 * i].error, 140)}")


def _time(result: Result, cap: float) -> str:
    return f"> {cap:.0f} s" if result.seconds is None else f"{result.seconds:.2f} s"


def _ratio(plain: Result, sdk: Result, cap: float) -> str:
    if sdk.seconds is None:
        return "n/a"
    plain_seconds = cap if plain.seconds is None else plain.seconds
    prefix = "> " if plain.seconds is None else ""
    ratio = plain_seconds / max(sdk.seconds, 1e-3)
    if ratio > 1000:
        return "> 1000x"
    return f"{prefix}{ratio:.0f}x" if ratio >= 10 else f"{prefix}{ratio:.1f}x"


def _short(text: str | None, width: int = 90) -> str:
    if not text:
        return "(no error yet: still retrying at the cap)"
    text = text.replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


if __name__ == "__main__":
    main()
