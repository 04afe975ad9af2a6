"""The SDK with a real MLflow 2.22 client: the tested lower bound of `mlflow-skinny`.

This is also the platform guide's fix for a 2.x server ("pin mlflow to the server's
major version"): with the pinned 2.22 client, `log_model` and registration work
against the 2.x server, where a 3.x client gets a 404.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer

pytestmark = pytest.mark.mlflow2

SCRIPT = Path(__file__).with_name("client2_script.py")


def run_client(python: Path, uri: str, experiment: str, tmp_path: Path) -> dict[str, str]:
    result = subprocess.run(
        [str(python), str(SCRIPT), uri, experiment, str(tmp_path / "models")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


@pytest.mark.parametrize("server_fixture", ["mlflow2_server", "tracking_server"])
def test_a_2x_client_tracks_logs_models_and_registers(
    mlflow2_client_python: Path,
    server_fixture: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    server: TrackingServer = request.getfixturevalue(server_fixture)
    experiment = f"compat-{server_fixture.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    out = run_client(mlflow2_client_python, server.url, experiment, tmp_path)
    assert out["client"].startswith("2.22.")
    assert out["verdict"] == (
        "compatible" if server_fixture == "mlflow2_server" else "incompatible"
    )

    client = MlflowClient(server.url)
    finished = client.get_run(out["run_id"])
    assert (finished.info.status, finished.data.params) == ("FINISHED", {"C": "0.5"})
    assert finished.data.metrics == {"auc": 0.9}
    assert finished.data.tags["michelangelo.mlflow_client"] == out["client"]
    assert client.get_run(out["failed_run_id"]).info.status == "FAILED"

    assert out["again"] == out["version"]  # idempotent on a 2.x client too
    version = client.get_model_version(f"{experiment}-model", out["version"])
    assert (version.status, version.run_id) == ("READY", out["run_id"])
    manifest = tmp_path / "models" / "ml-team" / f"{out['michelangelo']}.yaml"
    model = yaml.safe_load(manifest.read_text())
    assert model["spec"]["revisionId"] == int(out["version"])


def test_a_2x_client_keeps_its_points_through_an_outage(
    mlflow2_client_python: Path, tracking_server: TrackingServer, tmp_path: Path
) -> None:
    from tests._faults import closed_port

    result = subprocess.run(
        [
            str(mlflow2_client_python),
            str(SCRIPT.with_name("client2_outage.py")),
            tracking_server.url,
            f"http://127.0.0.1:{closed_port()}",
        ],
        cwd=SCRIPT.parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["client"].startswith("2.22.")
    assert out["transport_failure"] is True  # the spool sees an outage, not a refusal
    assert out["translated"] == "TrackingServerUnreachableError"
    client = MlflowClient(tracking_server.url)
    assert [m.step for m in client.get_metric_history(out["run_id"], "loss")] == list(range(20))
    assert client.get_run(out["run_id"]).info.status == "FINISHED"
