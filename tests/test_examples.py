"""The examples are real scripts: run them as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_no_example_shadows_an_installed_package() -> None:
    # `python examples/x.py` puts examples/ first on sys.path: an examples/databricks.py
    # would be imported by `import mlflow` in place of databricks-sdk.
    import importlib.util

    for script in EXAMPLES.glob("*.py"):
        assert importlib.util.find_spec(script.stem) is None, script.name


def test_notebook_is_stored_without_outputs() -> None:
    import nbformat

    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert (cell.outputs, cell.execution_count) == ([], None), cell.source[:60]


def test_notebook_runs_in_a_real_kernel_and_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbclient
    import nbformat

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the embedded local store
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()  # raises CellExecutionError on the first cell that fails

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart-notebook")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"logistic-notebook", "threshold-sweep"}
    run = runs["logistic-notebook"]
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "1.0"  # autologged
    assert "training_accuracy_score" in run.data.metrics
    assert 0.5 < run.data.metrics["test_auc"] <= 1.0
    assert run.data.tags["michelangelo.execution"] == "interactive"
    sweep = runs["threshold-sweep"]
    assert sweep.info.status == "FINISHED"
    assert len(client.get_metric_history(sweep.info.run_id, "accuracy")) == 3

    (version,) = client.search_model_versions("name = 'quickstart-notebook-classifier'")
    assert (version.status, version.run_id) == ("READY", run.info.run_id)
    manifests = sorted((tmp_path / "michelangelo-models").rglob("*.yaml"))
    assert [p.name for p in manifests] == ["quickstart-notebook-classifier-1.yaml"]
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert any("text/html" in output.get("data", {}) for output in outputs)  # the run's block
