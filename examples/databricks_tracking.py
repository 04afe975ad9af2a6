"""Track a training run in a Databricks workspace's MLflow, from a task pod or a laptop.

Point MLflow at the workspace with a host and a personal access token:

    export MLFLOW_TRACKING_URI=databricks
    export DATABRICKS_HOST=https://adb-1234567890.12.azuredatabricks.net
    export DATABRICKS_TOKEN=dapi...            # from a Kubernetes Secret in a task pod
    python examples/databricks_tracking.py

or with a profile of ~/.databrickscfg (`databricks configure --profile ml`):

    export MLFLOW_TRACKING_URI=databricks://ml
    python examples/databricks_tracking.py

Experiments in a workspace are named by their workspace path: set
DATABRICKS_EXPERIMENT (default /Shared/michelangelo-mlflow-example). The run's params,
metrics, tags and status go through the SDK's spool, exactly as with a tracking server;
models are logged with mlflow.sklearn.log_model as usual (see examples/quickstart.py
for registering them).
"""

from __future__ import annotations

import os

import mlflow
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import michelangelo_mlflow as mm

EXPERIMENT = os.environ.get("DATABRICKS_EXPERIMENT", "/Shared/michelangelo-mlflow-example")


@mm.tracked(experiment=EXPERIMENT, run_name="logistic-databricks", log_params="config")
def train_model(config: dict[str, float]) -> tuple[str, float]:
    """Train a logistic regression; return the run id and the test AUC."""
    features, labels = make_classification(n_samples=400, n_features=8, random_state=7)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, random_state=7)
    model = LogisticRegression(C=config["C"], max_iter=int(config["max_iter"]))
    model.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    mlflow.log_metric("auc", auc)
    run = mlflow.active_run()
    assert run is not None
    return run.info.run_id, auc


def main() -> None:
    report = mm.preflight()  # the workspace answers and takes the token, in about a second
    print(report)
    run_id, auc = train_model({"C": 0.5, "max_iter": 100})
    print(f"run {run_id} in {EXPERIMENT} on {mm.Settings().safe_tracking_uri}: auc={auc:.3f}")


if __name__ == "__main__":
    main()
