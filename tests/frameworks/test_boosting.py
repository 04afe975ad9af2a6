"""XGBoost and LightGBM: MLflow autolog, and callbacks that log every iteration.

The evaluation history the library returns (``evals_result``, ``record_evaluation``)
is what the framework computed; the tracked run must hold one point per boosting
round with the same values, and no other run appears.
"""

from __future__ import annotations

from typing import Any

import lightgbm
import mlflow
import numpy as np
import pytest
import xgboost
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from tests.frameworks.conftest import all_run_ids, experiment_name, points

ROUNDS = 6
RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 5))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def xgb_train(callbacks: list[Any] | None = None) -> dict[str, Any]:
    data = xgboost.DMatrix(X, label=Y)
    history: dict[str, Any] = {}
    xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2, "eval_metric": "logloss"},
        data,
        num_boost_round=ROUNDS,
        evals=[(data, "train")],
        evals_result=history,
        verbose_eval=False,
        callbacks=callbacks,
    )
    return history


def lgb_train(callbacks: list[Any] | None = None) -> dict[str, Any]:
    data = lightgbm.Dataset(X, label=Y)
    history: dict[str, Any] = {}
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 1, "verbosity": -1}
    lightgbm.train(
        params,
        data,
        num_boost_round=ROUNDS,
        valid_sets=[data],
        valid_names=["train"],
        callbacks=[lightgbm.record_evaluation(history), *(callbacks or [])],
    )
    return history


class XgbLogEveryRound(xgboost.callback.TrainingCallback):
    """A user's per-iteration callback: plain mlflow.log_metric."""

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        mlflow.log_metric("my_logloss", evals_log["train"]["logloss"][-1], step=epoch)
        return False


def lgb_log_every_round(env: Any) -> None:
    (_, name, value, _) = env.evaluation_result_list[0]
    mlflow.log_metric(f"my_{name}", value, step=env.iteration)


def assert_one_run_per_round(
    client: MlflowClient, run_id: str, key: str, computed: list[float]
) -> None:
    got = points(client, run_id, key)
    assert [s for s, _ in got] == list(range(ROUNDS)), key
    assert [v for _, v in got] == pytest.approx(computed, rel=1e-6), key


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_autolog_logs_every_round_into_the_tracked_run(
    settings: mm.Settings, client: MlflowClient, library: str
) -> None:
    before = all_run_ids(client)
    autolog = {library: {"log_models": False}}
    with mm.tracking_run(experiment_name(library), autolog=autolog, settings=settings) as run:
        history = xgb_train() if library == "xgboost" else lgb_train()
    stored = client.get_run(run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id}
    key = "logloss" if library == "xgboost" else "binary_logloss"
    assert_one_run_per_round(client, run.info.run_id, f"train-{key}", history["train"][key])
    assert stored.data.params["num_boost_round"] == str(ROUNDS)
    assert stored.data.tags["mlflow.autologging"] == library
    assert stored.info.status == "FINISHED"


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_a_callback_logging_every_round_lands_in_the_tracked_run(
    settings: mm.Settings, client: MlflowClient, library: str
) -> None:
    before = all_run_ids(client)
    with mm.tracking_run(experiment_name(library), settings=settings) as run:
        if library == "xgboost":
            history, key = xgb_train([XgbLogEveryRound()]), "logloss"
        else:
            history, key = lgb_train([lgb_log_every_round]), "binary_logloss"
    assert all_run_ids(client) - before == {run.info.run_id}
    assert_one_run_per_round(client, run.info.run_id, f"my_{key}", history["train"][key])
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
