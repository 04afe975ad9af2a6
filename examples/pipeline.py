"""A uniflow pipeline with two tracked tasks, runnable locally.

Each task is a `@uniflow.task` on Ray with `@mm.tracked` inside it: every task call is
one MLflow run, with the pipeline's provenance. In Michelangelo, submit it with

    ma pipeline dev-run -f pipeline.yaml --env MLFLOW_TRACKING_URI=http://mlflow:5000 \
        --env MICHELANGELO_MLFLOW_PIPELINE_RUN=nested

Locally, from the project root (uniflow names tasks by their module path), on the
embedded store or MLFLOW_TRACKING_URI; a pipeline run name groups the runs:

    MA_PIPELINE_RUN_NAME=local-1 MICHELANGELO_MLFLOW_PIPELINE_RUN=nested \
        python -m examples.pipeline
"""

from __future__ import annotations

import michelangelo.uniflow.core as uniflow
import mlflow
from michelangelo.uniflow.plugins.ray import RayTask
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import michelangelo_mlflow as mm


@uniflow.task(config=RayTask(head_cpu=1, head_memory="2Gi"))
@mm.tracked(experiment="fraud-pipeline", log_params="config")
def prepare(config: dict[str, int]) -> dict[str, list[list[float]] | list[int]]:
    """Build the training set."""
    features, labels = make_classification(
        n_samples=config["rows"], n_features=10, random_state=config["seed"]
    )
    mlflow.log_metric("rows", len(labels))
    mlflow.log_metric("positive_rate", float(labels.mean()))
    return {"features": features.tolist(), "labels": labels.tolist()}


@uniflow.task(config=RayTask(head_cpu=1, head_memory="2Gi"))
@mm.tracked(experiment="fraud-pipeline", log_params="config")
def train(data: dict[str, list[list[float]] | list[int]], config: dict[str, int]) -> float:
    """Train a gradient-boosted classifier and log its test AUC."""
    x_train, x_test, y_train, y_test = train_test_split(
        data["features"], data["labels"], random_state=config["seed"]
    )
    model = GradientBoostingClassifier(n_estimators=config["trees"], random_state=config["seed"])
    model.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    mlflow.log_metric("auc", auc)
    return auc


@uniflow.workflow()
def fraud_pipeline(config: dict[str, int]) -> float:
    """Prepare the data, then train."""
    data = prepare(config)
    return train(data, config)


if __name__ == "__main__":
    auc = fraud_pipeline({"rows": 400, "seed": 7, "trees": 20})
    print(f"pipeline finished: auc={auc:.3f}")
