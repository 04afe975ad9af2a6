"""autolog= on tracking_run and @tracked: MLflow autologging for the run, then put back."""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils import autologging_utils, import_hooks
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import ConfigurationError

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.1, 0.8], [0.8, 0.3]] * 4)
Y = np.array([0, 1, 0, 1, 0, 1] * 4)


@pytest.fixture(autouse=True)
def autologging_left_as_found() -> Iterator[None]:
    """Every test starts with autologging off and must leave it so (asserted)."""
    before = copy.deepcopy(autologging_utils.AUTOLOGGING_INTEGRATIONS)
    yield
    after = autologging_utils.AUTOLOGGING_INTEGRATIONS
    for name in set(after) - set(before):  # flavor modules imported by the test
        assert after[name] in ({}, before.get(name)), name
    for name in set(before):
        assert after.get(name) == before[name], name


def experiment_name() -> str:
    return f"autolog-{uuid.uuid4().hex[:8]}"


def all_runs(client: MlflowClient) -> set[str]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(experiments, max_results=5000)}


def runs_of(client: MlflowClient, name: str) -> list[Any]:
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return client.search_runs([experiment.experiment_id])


def fit_logs_nothing(client: MlflowClient, tmp_path: Path) -> None:
    """A fit now creates no run anywhere: not on the server, not in a local store."""
    before = all_runs(client)
    LogisticRegression().fit(X, Y)
    assert mlflow.active_run() is None
    assert all_runs(client) == before
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()
    assert autologging_utils.autologging_is_disabled("sklearn")


# --- what autolog logs lands in the run -------------------------------------------------


def test_sklearn_params_metrics_and_model_land_in_the_run(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    name = experiment_name()
    with mm.tracking_run(name, "fit", autolog="sklearn", settings=settings) as run:
        LogisticRegression(C=0.5, max_iter=50).fit(X, Y)
    stored = client.get_run(run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params["C"] == "0.5"
    assert stored.data.params["max_iter"] == "50"
    assert "training_accuracy_score" in stored.data.metrics
    assert stored.data.tags["estimator_name"] == "LogisticRegression"
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert len(models) == 1
    assert [r.info.run_id for r in runs_of(client, name)] == [run.info.run_id]
    fit_logs_nothing(client, tmp_path)


def test_lightgbm_and_sklearn_together_with_options(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    import lightgbm

    name = experiment_name()
    before = all_runs(client)
    autolog = {
        "log_models": False,
        "lightgbm": True,
        "sklearn": {"log_post_training_metrics": False},
    }
    with mm.tracking_run(name, autolog=autolog, settings=settings) as run:
        data = lightgbm.Dataset(X, label=Y)
        params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 1, "verbosity": -1}
        lightgbm.train(params, data, num_boost_round=3, valid_sets=[data], valid_names=["train"])
        LogisticRegression(C=2.0).fit(X, Y)
    stored = client.get_run(run.info.run_id)
    assert stored.data.params["num_leaves"] == "4"
    assert stored.data.params["num_boost_round"] == "3"
    history = client.get_metric_history(run.info.run_id, "train-binary_logloss")
    assert [m.step for m in history] == [0, 1, 2]
    assert stored.data.params["C"] == "2.0"  # the sklearn fit: in the same run
    assert not client.search_logged_models([run.info.experiment_id])  # log_models=False
    assert all_runs(client) - before == {run.info.run_id}
    fit_logs_nothing(client, tmp_path)


def test_the_run_carries_the_tags_mlflow_flavor_autolog_sets(
    settings: mm.Settings, client: MlflowClient
) -> None:
    # Plain MLflow: mlflow.sklearn.autolog() creates a run for a fit outside any run.
    name = experiment_name()
    found = copy.deepcopy(autologging_utils.AUTOLOGGING_INTEGRATIONS.get("sklearn"))
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(name)
    mlflow.sklearn.autolog(log_models=False, extra_tags={"team": "risk"})
    try:
        LogisticRegression().fit(X, Y)
    finally:
        mlflow.sklearn.autolog(disable=True)
        autologging_utils.AUTOLOGGING_INTEGRATIONS.pop("sklearn", None)
        if found is not None:
            autologging_utils.AUTOLOGGING_INTEGRATIONS["sklearn"] = found
    (plain,) = runs_of(client, name)
    autolog = {"sklearn": {"log_models": False, "extra_tags": {"team": "risk"}}}
    with mm.tracking_run(name, autolog=autolog, settings=settings) as run:
        LogisticRegression().fit(X, Y)
    tags = client.get_run(run.info.run_id).data.tags
    assert plain.data.tags["mlflow.autologging"] == "sklearn"
    for key in ("mlflow.autologging", "team"):
        assert tags[key] == plain.data.tags[key], key


def test_mlflow_autolog_for_every_library(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    hooks_before = {k: list(v) for k, v in import_hooks._post_import_hooks.items()}
    with mm.tracking_run(
        experiment_name(), autolog={"log_models": False}, settings=settings
    ) as run:
        LogisticRegression(C=3.0).fit(X, Y)
    assert client.get_run(run.info.run_id).data.params["C"] == "3.0"
    fit_logs_nothing(client, tmp_path)
    # mlflow.autolog() registers hooks for libraries imported later: none is left behind.
    hooks_after = {k: v for k, v in import_hooks._post_import_hooks.items() if v}
    assert hooks_after == {k: v for k, v in hooks_before.items() if v}


def test_grid_search_children_are_nested_under_the_run(
    settings: mm.Settings, client: MlflowClient
) -> None:
    name = experiment_name()
    autolog = {"sklearn": {"log_models": False, "max_tuning_runs": 2}}
    with mm.tracking_run(name, autolog=autolog, settings=settings) as run:
        GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X, Y)
    runs = runs_of(client, name)
    children = [r for r in runs if r.info.run_id != run.info.run_id]
    assert len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {run.info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert "best_C" in client.get_run(run.info.run_id).data.params


def test_tracked_function_autologs_each_call(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    name = experiment_name()

    @mm.tracked(experiment=name, autolog={"sklearn": {"log_models": False}}, settings=settings)
    def train(c: float) -> str:
        LogisticRegression(C=c).fit(X, Y)
        active = mlflow.active_run()
        assert active is not None
        return active.info.run_id

    first, second = train(0.25), train(4.0)
    assert client.get_run(first).data.params["C"] == "0.25"
    assert client.get_run(second).data.params["C"] == "4.0"
    assert {r.info.run_id for r in runs_of(client, name)} == {first, second}
    fit_logs_nothing(client, tmp_path)


# --- restored on every exit path ----------------------------------------------------------


@pytest.mark.parametrize("error", [ValueError("bad fold"), KeyboardInterrupt()])
def test_autolog_is_put_back_when_the_body_raises(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path, error: BaseException
) -> None:
    with pytest.raises(type(error)):
        with mm.tracking_run(experiment_name(), autolog="sklearn", settings=settings) as run:
            assert not autologging_utils.autologging_is_disabled("sklearn")
            raise error
    assert client.get_run(run.info.run_id).info.status in {"FAILED", "KILLED"}
    fit_logs_nothing(client, tmp_path)


def test_autolog_is_put_back_when_the_run_cannot_start(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="no such run"):
        with mm.tracking_run(autolog="sklearn", run_id="0" * 32, settings=settings):
            pass
    fit_logs_nothing(client, tmp_path)


def test_a_users_global_flavor_autolog_is_kept(settings: mm.Settings, client: MlflowClient) -> None:
    mlflow.sklearn.autolog(log_models=False, max_tuning_runs=1)
    try:
        before = copy.deepcopy(autologging_utils.AUTOLOGGING_INTEGRATIONS["sklearn"])
        with mm.tracking_run(
            experiment_name(), autolog={"sklearn": {"log_models": False}}, settings=settings
        ):
            assert autologging_utils.get_autologging_config("sklearn", "max_tuning_runs") == 5
        assert autologging_utils.AUTOLOGGING_INTEGRATIONS["sklearn"] == before
        mlflow.set_tracking_uri(settings.effective_tracking_uri)
        with mlflow.start_run() as plain:  # the user's own run, with MLflow alone
            LogisticRegression(C=7.0).fit(X, Y)
        assert client.get_run(plain.info.run_id).data.params["C"] == "7.0"
    finally:
        mlflow.sklearn.autolog(disable=True)
        autologging_utils.AUTOLOGGING_INTEGRATIONS["sklearn"] = {}


def test_a_users_global_mlflow_autolog_is_kept(settings: mm.Settings) -> None:
    mlflow.autolog(log_models=False, silent=True)
    try:
        before = copy.deepcopy(autologging_utils.AUTOLOGGING_INTEGRATIONS)
        with mm.tracking_run(experiment_name(), autolog="sklearn", settings=settings):
            assert not autologging_utils.get_autologging_config(
                "sklearn", autologging_utils.AUTOLOGGING_CONF_KEY_IS_GLOBALLY_CONFIGURED
            )
        assert before == autologging_utils.AUTOLOGGING_INTEGRATIONS
        assert not autologging_utils.autologging_is_disabled("sklearn")
    finally:
        mlflow.autolog(disable=True, silent=True)
        for name in list(autologging_utils.AUTOLOGGING_INTEGRATIONS):
            autologging_utils.AUTOLOGGING_INTEGRATIONS[name] = {}


def test_autolog_false_switches_a_users_autolog_off_for_the_run(
    settings: mm.Settings, client: MlflowClient
) -> None:
    mlflow.sklearn.autolog(log_models=False)
    try:
        with mm.tracking_run(experiment_name(), autolog=False, settings=settings) as run:
            LogisticRegression(C=9.0).fit(X, Y)
        assert "C" not in client.get_run(run.info.run_id).data.params
        assert not autologging_utils.autologging_is_disabled("sklearn")
    finally:
        mlflow.sklearn.autolog(disable=True)
        autologging_utils.AUTOLOGGING_INTEGRATIONS["sklearn"] = {}


def test_another_threads_different_autolog_is_refused(settings: mm.Settings) -> None:
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with mm.tracking_run(experiment_name(), autolog="sklearn", settings=settings):
            opened.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert opened.wait(60)
        with pytest.raises(ConfigurationError, match="another thread") as info:
            with mm.tracking_run(experiment_name(), autolog=True, settings=settings):
                pass
        assert info.value.variable == "autolog"
    finally:
        release.set()
        holder.join(60)


# --- bad input: a ConfigurationError before any run exists ----------------------------


@pytest.mark.parametrize(
    ("name", "flavor", "module"),
    [
        ("lightning", "pytorch", "lightning"),
        ("pytorch_lightning", "pytorch", "pytorch_lightning"),
        ("pytorch-lightning", "pytorch", "pytorch_lightning"),
        ("torch", "pytorch", "torch"),
        ("pytorch", "pytorch", "torch"),
        ("transformers", "transformers", "transformers"),
        ("keras", "keras", "keras"),
        ("tensorflow", "tensorflow", "tensorflow"),
    ],
)
def test_the_names_users_type_are_mlflows_flavors(name: str, flavor: str, module: str) -> None:
    """Each name is accepted as MLflow's flavor; where its library is missing, it is named."""
    import importlib.util

    if importlib.util.find_spec(module) is None:  # tests/frameworks installs them
        with pytest.raises(ConfigurationError, match=f"needs the '{module}' package") as info:
            mm.tracking_run("x", autolog=name)
        assert "pip install" in (info.value.fix or "")
        return
    run = mm.tracking_run("x", autolog=[name])
    assert run.autolog is not None
    assert [call for call, _ in run.autolog.calls] == [flavor]
    assert run.autolog.tags == {"mlflow.autologging": flavor}


@pytest.mark.parametrize(
    ("autolog", "match", "fix"),
    [
        ("lightnig", "not a flavor MLflow can autolog", "did you mean 'lightning'"),
        ("pytorch_lightnin", "not a flavor MLflow can autolog", "did you mean 'pytorch_lightning'"),
        ("tensorflw", "not a flavor MLflow can autolog", "did you mean 'tensorflow'"),
        (["lightning", "torch"], "both MLflow's flavor 'pytorch'", "name it once"),
        ({"lightnin": True}, "neither an autolog option nor a flavor", "'lightning'"),
    ],
)
def test_a_typo_in_a_library_name_suggests_it(autolog: Any, match: str, fix: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        mm.tracking_run("x", autolog=autolog)
    assert fix in (info.value.fix or "")  # "did you mean 'x'": x is the closest name


@pytest.mark.parametrize(
    ("autolog", "match", "fix"),
    [
        ("sklaern", "not a flavor MLflow can autolog", "did you mean 'sklearn'"),
        ("paddle", "needs the 'paddle' package", "pip install 'paddlepaddle>="),
        ({"log_modles": False}, "does not take", "did you mean 'log_models'"),
        ({"sklearn": {"max_tuning_run": 2}}, "mlflow.sklearn.autolog", "max_tuning_runs"),
        ({"exclusive": True}, "sets 'exclusive'", "exclusive=True keeps autologging out"),
        ({"disable": True}, "sets 'disable'", "autolog=False"),
        ({"sklearn": "yes"}, "maps the flavor 'sklearn'", "map it to True or to a dict"),
        (["sklearn", "sklearn"], "names a flavor twice", "once"),
        ([], "names no flavor", "pass True"),
        ({"lightgmb": True}, "neither an autolog option nor a flavor", "'lightgbm'"),
        (3, "is a int", "pass True"),
    ],
)
def test_bad_autolog_is_a_configuration_error(autolog: Any, match: str, fix: str) -> None:
    for make in (
        lambda: mm.tracking_run("x", autolog=autolog),
        lambda: mm.tracked(experiment="x", autolog=autolog),
    ):
        with pytest.raises(ConfigurationError, match=match) as info:
            make()
        assert info.value.variable == "autolog"
        assert fix in (info.value.fix or "")
