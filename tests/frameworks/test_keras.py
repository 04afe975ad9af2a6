"""Keras 3 (on the torch backend: TensorFlow is not installed) with ``autolog="keras"``.

``mm.tracking_run(autolog="keras")`` switches on ``mlflow.keras.autolog()`` for the run:
one point a epoch of the ``History`` Keras returns, the optimizer's params, and the
``mlflow.autologging`` tag that ``mlflow.keras.autolog()`` gives the runs it creates.
The same training under plain MLflow, against the same server, is the reference.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

from typing import Any

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from tests.frameworks.conftest import all_run_ids, experiment_name, points

EPOCHS = 3


def fit() -> dict[str, list[float]]:
    """A tiny regression for EPOCHS epochs; the History Keras returns."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    history: Any = model.fit(x, x.sum(1, keepdims=True), epochs=EPOCHS, batch_size=8, verbose=0)
    return dict(history.history)


def test_autolog_keras_logs_each_epoch_into_the_tracked_run(
    settings: mm.Settings, client: MlflowClient
) -> None:
    assert keras.backend.backend() == "torch"
    name = experiment_name("keras")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(name)
    mlflow.keras.autolog(log_models=False)
    try:
        with mlflow.start_run() as plain:
            reference = fit()
    finally:
        mlflow.keras.autolog(disable=True)
    before = all_run_ids(client)
    with mm.tracking_run(name, autolog={"keras": {"log_models": False}}, settings=settings) as run:
        history = fit()
    assert all_run_ids(client) - before == {run.info.run_id}
    stored, expected = client.get_run(run.info.run_id), client.get_run(plain.info.run_id)
    got = points(client, run.info.run_id, "loss")
    assert [s for s, _ in got] == list(range(EPOCHS))
    assert [v for _, v in got] == pytest.approx(history["loss"], rel=1e-6)
    assert history["loss"] == pytest.approx(reference["loss"], rel=1e-6)  # same training
    assert set(stored.data.params) == set(expected.data.params)
    assert stored.data.params["epochs"] == str(EPOCHS)
    assert stored.data.tags["mlflow.autologging"] == "keras"
    assert stored.info.status == "FINISHED"
