"""Run by tests/compat/test_client_mlflow2.py with the MLflow 2.22 client's Python.

Usage: python client2_script.py TRACKING_URI EXPERIMENT MANIFEST_DIR
Prints one JSON line with what it did.
"""

from __future__ import annotations

import json
import os
import sys

import mlflow
from sklearn.linear_model import LogisticRegression

import michelangelo_mlflow as mm


def main(uri: str, experiment: str, manifest_dir: str) -> None:
    os.environ["MICHELANGELO_MLFLOW_REGISTRY"] = "manifest"  # as a task pod sets it
    settings = mm.Settings(tracking_uri=uri, manifest_dir=manifest_dir)

    @mm.tracked(experiment=experiment, log_params="config", settings=settings)
    def train(config: dict[str, float]) -> str:
        model = LogisticRegression(C=config["C"]).fit([[0.0], [1.0], [0.0], [1.0]], [0, 1, 0, 1])
        mlflow.log_metric("auc", 0.9)
        mlflow.sklearn.log_model(model, artifact_path="model")  # MLflow 2 spelling
        run = mlflow.active_run()
        assert run is not None
        return run.info.run_id

    run_id = train({"C": 0.5})
    failed = ""
    try:
        with mm.tracking_run(experiment, run_name="broken", settings=settings) as run:
            failed = run.info.run_id
            raise ValueError("boom")
    except ValueError:
        pass
    report = mm.preflight(settings, force=True)
    registration = mm.register_model(
        f"runs:/{run_id}/model", f"{experiment}-model", namespace="ml-team", settings=settings
    )
    again = mm.register_model(
        f"runs:/{run_id}/model", f"{experiment}-model", namespace="ml-team", settings=settings
    )
    print(
        json.dumps(
            {
                "client": mlflow.__version__,
                "run_id": run_id,
                "failed_run_id": failed,
                "server_version": report.server_version,
                "verdict": str(report.verdict.value),
                "version": registration.mlflow.version,
                "again": again.mlflow.version,
                "michelangelo": registration.michelangelo.name
                if registration.michelangelo
                else None,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
