"""examples/pipeline.py: a real uniflow pipeline of two Ray tasks, run locally."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer

ROOT = Path(__file__).parent.parent


@pytest.mark.needs("michelangelo")  # the example runs a uniflow pipeline
def test_pipeline_example_nests_both_task_runs_under_the_pipeline(
    tracking_server: TrackingServer,
) -> None:
    pipeline_run = f"example-{time.time_ns()}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MA_", "UF_"))}
    env = {
        **clean,
        "MLFLOW_TRACKING_URI": tracking_server.url,
        "MA_NAMESPACE": "ml-team",
        "MA_PIPELINE_RUN_NAME": pipeline_run,
        "MICHELANGELO_MLFLOW_PIPELINE_RUN": "nested",
        "_RAY_INIT_KWARGS": "{'num_cpus': 2, 'include_dashboard': False}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "examples.pipeline"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pipeline finished: auc=" in result.stdout

    client = MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name("fraud-pipeline")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`michelangelo.pipeline_run` = '{pipeline_run}'"
    )
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {pipeline_run, "prepare", "train"}
    parent = by_name[pipeline_run]
    assert parent.data.tags["michelangelo.role"] == "pipeline"
    for task in ("prepare", "train"):
        run = by_name[task]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["michelangelo.task"] == f"examples.pipeline.{task}"
        assert run.data.params == {"rows": "400", "seed": "7", "trees": "20"}
    assert by_name["prepare"].data.metrics["rows"] == 400
    assert 0.5 < by_name["train"].data.metrics["auc"] <= 1.0
