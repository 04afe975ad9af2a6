"""The examples are real scripts: run them as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

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


def test_quickstart_on_the_embedded_store(tmp_path: Path) -> None:
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
