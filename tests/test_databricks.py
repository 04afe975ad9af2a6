"""MLFLOW_TRACKING_URI=databricks: a tracked run against a local fake of the workspace's API.

The fake answers the MLflow REST calls this SDK makes (through MLflow's Databricks
store and databricks-sdk) from memory, with ``responses``; any other call fails the
test, so the list of endpoints below is the list of calls the SDK makes.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import AuthenticationError

HOST = "https://adb-1234567890.12.azuredatabricks.net"
TOKEN = "dapi-0123456789abcdef"
EXAMPLE = Path(__file__).parent.parent / "examples" / "databricks_tracking.py"


@dataclass
class Workspace:
    """An in-memory Databricks workspace's MLflow tracking API."""

    token: str = TOKEN
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # --- plumbing ---------------------------------------------------------------------
    def install(self, mock: responses.RequestsMock) -> None:
        """Answer every GET and POST to the workspace; one dispatcher, so no route is used up."""
        for method in (responses.GET, responses.POST):
            mock.add_callback(method, re.compile(f"{re.escape(HOST)}/.*"), callback=self._answer)

    def _routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("POST", "experiments/search"): self.search_experiments,
            ("GET", "experiments/get-by-name"): self.get_experiment_by_name,
            ("GET", "experiments/get"): self.get_experiment,
            ("POST", "experiments/create"): self.create_experiment,
            ("POST", "runs/create"): self.create_run,
            ("GET", "runs/get"): self.get_run,
            ("POST", "runs/update"): self.update_run,
            ("POST", "runs/log-batch"): self.log_batch,
            ("POST", "runs/set-tag"): self.set_tag,
            ("POST", "runs/delete-tag"): self.delete_tag,
            ("GET", "metrics/get-history"): self.metric_history,
        }

    def _answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        if parts.path == "/.well-known/databricks-config":  # databricks-sdk's probe, no auth
            self.calls.append(("GET", ".well-known/databricks-config"))
            return 200, {"Content-Type": "application/json"}, "{}"
        path = parts.path.removeprefix("/api/2.0/mlflow/")
        handler = self._routes().get((request.method, path))
        if handler is None:
            self.unexpected.append(f"{request.method} {request.url}")
            return 404, {}, json.dumps({"error_code": "ENDPOINT_NOT_FOUND", "message": "not faked"})
        self.calls.append((request.method, path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {}, json.dumps({"error_code": "UNAUTHENTICATED", "message": "bad token"})
        if request.method == "GET":
            body = {k: v[0] for k, v in parse_qs(parts.query).items()}
        else:
            body = json.loads(request.body or "{}")
        status, answer = handler(body)
        return status, {"Content-Type": "application/json"}, json.dumps(answer)

    @staticmethod
    def _missing(what: str) -> tuple[int, dict[str, Any]]:
        return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{what} not found"}

    # --- experiments ------------------------------------------------------------------
    def search_experiments(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"experiments": list(self.experiments.values())}

    def get_experiment_by_name(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for experiment in self.experiments.values():
            if experiment["name"] == body["experiment_name"]:
                return 200, {"experiment": experiment}
        return self._missing(f"experiment {body['experiment_name']}")

    def get_experiment(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        experiment = self.experiments.get(body["experiment_id"])
        return (200, {"experiment": experiment}) if experiment else self._missing("experiment")

    def create_experiment(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        experiment_id = str(next(self.ids))
        self.experiments[experiment_id] = {
            "experiment_id": experiment_id,
            "name": body["name"],
            "lifecycle_stage": "active",
            "artifact_location": f"dbfs:/databricks/mlflow-tracking/{experiment_id}",
        }
        return 200, {"experiment_id": experiment_id}

    # --- runs -------------------------------------------------------------------------
    def create_run(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        run_id = f"run{next(self.ids):04d}"
        self.runs[run_id] = {
            "info": {
                "run_id": run_id,
                "run_uuid": run_id,
                "experiment_id": body["experiment_id"],
                "run_name": body.get("run_name", ""),
                "status": "RUNNING",
                "start_time": body.get("start_time", 0),
                "lifecycle_stage": "active",
                "artifact_uri": f"dbfs:/databricks/mlflow-tracking/{run_id}/artifacts",
            },
            "data": {"metrics": [], "params": [], "tags": list(body.get("tags", []))},
        }
        return 200, {"run": self.runs[run_id]}

    def get_run(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        run = self.runs.get(body.get("run_id") or body.get("run_uuid", ""))
        return (200, {"run": run}) if run else self._missing("run")

    def update_run(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        run = self.runs[body["run_id"]]
        run["info"]["status"] = body.get("status", run["info"]["status"])
        run["info"]["end_time"] = body.get("end_time")
        return 200, {"run_info": run["info"]}

    def log_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = self.runs[body["run_id"]]["data"]
        data["metrics"] += body.get("metrics", [])
        data["params"] += body.get("params", [])
        for tag in body.get("tags", []):
            self._set(data, tag)
        return 200, {}

    def set_tag(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._set(self.runs[body["run_id"]]["data"], {"key": body["key"], "value": body["value"]})
        return 200, {}

    def delete_tag(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = self.runs[body["run_id"]]["data"]
        data["tags"] = [t for t in data["tags"] if t["key"] != body["key"]]
        return 200, {}

    def metric_history(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = self.runs[body["run_id"]]["data"]
        return 200, {"metrics": [m for m in data["metrics"] if m["key"] == body["metric_key"]]}

    @staticmethod
    def _set(data: dict[str, Any], tag: dict[str, str]) -> None:
        data["tags"] = [t for t in data["tags"] if t["key"] != tag["key"]] + [tag]

    # --- reading back -----------------------------------------------------------------
    def only_run(self) -> dict[str, Any]:
        (run,) = self.runs.values()
        data = run["data"]
        return {
            "status": run["info"]["status"],
            "experiment": self.experiments[run["info"]["experiment_id"]]["name"],
            "params": {p["key"]: p["value"] for p in data["params"]},
            "metrics": {m["key"]: m["value"] for m in data["metrics"]},
            "tags": {t["key"]: t["value"] for t in data["tags"]},
        }


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    fake = Workspace()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.install(mock)
        yield fake
    assert not fake.unexpected, fake.unexpected


@pytest.fixture
def host_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    monkeypatch.setenv("DATABRICKS_HOST", HOST)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)


def test_a_tracked_run_with_host_and_token(workspace: Workspace, host_and_token: None) -> None:
    with mm.tracking_run("/Shared/fraud-detection", "baseline", params={"lr": 0.1}) as run:
        import mlflow

        mlflow.log_metric("auc", 0.91)
        mlflow.set_tag("team", "risk")
    stored = workspace.only_run()
    assert stored["status"] == "FINISHED"
    assert stored["experiment"] == "/Shared/fraud-detection"
    assert stored["params"] == {"lr": "0.1"}
    assert stored["metrics"] == {"auc": 0.91}
    assert stored["tags"]["team"] == "risk"
    assert stored["tags"]["michelangelo.sdk_version"] == mm.__version__
    assert run.info.run_id in workspace.runs
    assert set(workspace.calls) == {  # every call the SDK made: the ones docs/notebooks.md lists
        ("GET", ".well-known/databricks-config"),
        ("POST", "experiments/search"),
        ("GET", "experiments/get-by-name"),
        ("POST", "experiments/create"),
        ("POST", "runs/create"),
        ("GET", "runs/get"),
        ("POST", "runs/log-batch"),
        ("POST", "runs/update"),
    }


def test_a_profile_from_databrickscfg(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".databrickscfg").write_text(f"[ml]\nhost = {HOST}\ntoken = {TOKEN}\n")
    settings = mm.Settings(tracking_uri="databricks://ml")
    with mm.tracking_run("/Shared/profiles", settings=settings):
        import mlflow

        mlflow.log_metric("rows", 10)
    assert workspace.only_run()["metrics"] == {"rows": 10}


def test_a_rejected_token_is_an_authentication_error(
    workspace: Workspace, host_and_token: None
) -> None:
    workspace.token = "another"
    with pytest.raises(AuthenticationError, match="DATABRICKS_TOKEN") as info:
        with mm.tracking_run("/Shared/fraud-detection"):
            pass
    assert TOKEN not in str(info.value)
    assert workspace.runs == {}


RUN_EXAMPLE = """
import json, runpy, sys
import responses
from tests.test_databricks import Workspace

sys.path.insert(0, sys.argv[2])  # what `python examples/<script>.py` puts first
fake = Workspace()
with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
    fake.install(mock)
    runpy.run_path(sys.argv[1], run_name="__main__")
assert not fake.unexpected, fake.unexpected
print(json.dumps(fake.only_run()))
"""


def test_the_example_runs_as_a_script_against_the_workspace(
    host_and_token: None, tmp_path: Path
) -> None:
    root = str(Path(__file__).parent.parent)  # for `tests.test_databricks`
    result = subprocess.run(
        [sys.executable, "-c", RUN_EXAMPLE, str(EXAMPLE), str(EXAMPLE.parent)],
        cwd=tmp_path,  # the run's spool goes here
        env={**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *printed, last = result.stdout.strip().splitlines()
    stored = json.loads(last)
    assert stored["status"] == "FINISHED"
    assert stored["experiment"] == "/Shared/michelangelo-mlflow-example"
    assert stored["params"] == {"C": "0.5", "max_iter": "100"}
    assert 0.5 < stored["metrics"]["auc"] <= 1.0
    assert any("auc=" in line and "databricks" in line for line in printed), printed
