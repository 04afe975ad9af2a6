"""The examples are real scripts: run them as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from tests.helpers.registry import assert_strict_valid

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MA_", "UF_"))}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_quickstart_trains_and_registers_on_the_embedded_store(tmp_path: Path) -> None:
    result = run_example("quickstart.py", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "logistic-baseline"
    assert run.data.params == {"C": "1.0", "max_iter": "200"}
    assert 0.5 < run.data.metrics["auc"] <= 1.0
    assert run.data.tags["michelangelo.task"] == "__main__.train_model"
    assert f"run {run.info.run_id}: auc=" in result.stdout

    (version,) = client.search_model_versions("name = 'quickstart-classifier'")
    assert (version.status, version.run_id) == ("READY", run.info.run_id)
    assert version.tags["michelangelo.name"] == "quickstart-classifier-1"
    manifests = sorted((tmp_path / "michelangelo-models").rglob("*.yaml"))
    assert [p.relative_to(tmp_path).as_posix() for p in manifests] == [
        "michelangelo-models/quickstart/quickstart-classifier-1.yaml"
    ]
    model = yaml.safe_load(manifests[0].read_text())
    assert_strict_valid(model)
    assert model["spec"]["kind"] == "MODEL_KIND_BINARY_CLASSIFICATION"
    assert model["spec"]["revisionId"] == 1
    assert model["spec"]["qualityScores"][0]["name"] == "auc"
    assert model["metadata"]["annotations"]["mlflow.michelangelo.ai/run-id"] == run.info.run_id
    assert "quickstart-classifier version 1" in result.stdout
