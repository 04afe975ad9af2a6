"""Quickstart: train a small scikit-learn model in a tracked function, register it.

Runs anywhere with no server: without MLFLOW_TRACKING_URI the run goes to MLflow's
embedded local store (./mlflow.db), and the Michelangelo Model object is written as a
manifest under ./michelangelo-models. Set MLFLOW_TRACKING_URI to use a tracking server.

    pip install -e ".[examples]"
    python examples/quickstart.py
"""

from __future__ import annotations

import mlflow
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import michelangelo_mlflow as mm


# --8<-- [start:train]
@mm.tracked(experiment="quickstart", run_name="logistic-baseline", log_params="config")
def train_model(n_samples: int, config: dict[str, float]) -> tuple[str, float]:
    """Train a logistic regression; return the run id and the test AUC."""
    features, labels = make_classification(n_samples=n_samples, n_features=8, random_state=7)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, random_state=7)
    model = LogisticRegression(C=config["C"], max_iter=int(config["max_iter"]))
    model.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    mlflow.log_metric("auc", auc)
    mlflow.sklearn.log_model(model, name="model", input_example=x_test[:2])
    run = mlflow.active_run()
    assert run is not None
    return run.info.run_id, auc


# --8<-- [end:train]


# --8<-- [start:register]
def register(run_id: str) -> mm.Registration:
    """Register the run's model in MLflow and write its Michelangelo Model manifest.

    The manifest backend needs no cluster: it writes
    ./michelangelo-models/quickstart/quickstart-classifier-<version>.yaml, ready for
    `kubectl apply -f`. Calling it again for the same run returns the same version.
    """
    settings = mm.Settings(registry_backend="manifest", namespace="quickstart")
    return mm.register_model(
        f"runs:/{run_id}/model",
        "quickstart-classifier",
        kind="binary_classification",
        quality_metrics=["auc"],
        description="logistic regression baseline from examples/quickstart.py",
        settings=settings,
    )


# --8<-- [end:register]


def main() -> None:
    run_id, auc = train_model(500, {"C": 1.0, "max_iter": 200})
    print(f"run {run_id}: auc={auc:.3f}")
    registration = register(run_id)
    michelangelo = registration.michelangelo
    assert michelangelo is not None
    print(
        f"registered {registration.mlflow.name} version {registration.mlflow.version}; "
        f"Model manifest: michelangelo-models/{michelangelo.namespace}/{michelangelo.name}.yaml"
    )


if __name__ == "__main__":
    main()
