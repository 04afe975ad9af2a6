"""Shared fixtures: real MLflow servers and a clean MLflow state for every test."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TypeVar

import mlflow
import pytest
from _pytest.reports import CollectReport, TestReport
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer
from tests._proxy import FaultProxy

pytest_plugins = ["michelangelo_mlflow.testing.pytest_plugin"]

_Report = TypeVar("_Report", TestReport, CollectReport)

_ENV_PREFIXES = ("MLFLOW_", "MICHELANGELO_MLFLOW_", "MA_", "UF_", "DATABRICKS_")
_ENV_NAMES = ("TRACKING_URI", "KUBECONFIG", "KUBERNETES_SERVICE_HOST")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts with no MLflow/Michelangelo variables, in its own directory.

    MLflow's local default store (``sqlite:///mlflow.db``) then lands in ``tmp_path``,
    and no run, tracking URI or experiment leaks from one test into the next.
    """
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) or name in _ENV_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    yield
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.tracking.fluent._active_experiment_id = None  # what mlflow.set_experiment() left


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real MLflow 3 server (sqlite, served artifacts) shared by the session."""
    with TrackingServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture
def settings(tracking_server: TrackingServer) -> mm.Settings:
    """Settings pointing at the shared MLflow 3 server."""
    return mm.Settings(tracking_uri=tracking_server.url)


@pytest.fixture
def client(tracking_server: TrackingServer) -> MlflowClient:
    """An MLflow client of the shared MLflow 3 server."""
    return MlflowClient(tracking_server.url)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real MLflow 3 server with ``--app-name basic-auth``, shared by the session."""
    with TrackingServer(tmp_path_factory.mktemp("mlflow-auth"), basic_auth=True) as server:
        yield server


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A server of this test's own, which the test may kill and restart."""
    with TrackingServer(tmp_path_factory.mktemp("killable")) as server:
        yield server


@pytest.fixture
def proxy(tracking_server: TrackingServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the shared server."""
    with FaultProxy(tracking_server.url) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def other_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A second real MLflow 3 server, for runs on two servers at once."""
    with TrackingServer(tmp_path_factory.mktemp("mlflow-other")) as server:
        yield server


# --- registration (tests/test_registry*.py) ---------------------------------------------


@pytest.fixture(scope="session")
def logged_model(tracking_server: TrackingServer) -> mlflow.models.model.ModelInfo:
    """One tiny sklearn model logged in a finished run on ``tracking_server``.

    Returns the ``ModelInfo``; tests register it under names of their own.
    """
    from sklearn.linear_model import LogisticRegression

    settings = mm.Settings(tracking_uri=tracking_server.url)
    with mm.tracking_run("registry-tests", settings=settings):
        mlflow.log_metric("auc", 0.91)
        mlflow.log_metric("logloss", 0.3)
        classifier = LogisticRegression().fit([[0.0], [1.0], [0.2], [0.9]], [0, 1, 0, 1])
        return mlflow.sklearn.log_model(classifier, name="model")


# --- tests that need a package missing on this Python (noxfile.py: tests_matrix) ---------

#: The packages this session may lack, comma-separated: set by the nox session of a Python
#: on which they cannot be installed. Anywhere else, a test that skips because a package is
#: missing fails instead, so that a broken install cannot pass as skips.
MAY_LACK = "MM_TEST_MAY_LACK"
_IMPORT_SKIP = re.compile(r"could not import '([\w.]+)'")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``needs("pkg")`` skips where ``pkg`` cannot be imported."""
    for marker in item.iter_markers("needs"):
        for name in marker.args:
            if importlib.util.find_spec(name) is None:
                pytest.importorskip(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, TestReport, TestReport]:
    """A test skipped for a missing package fails unless the session may lack it."""
    return _fail_unless_may_lack((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, CollectReport, CollectReport]:
    """A module skipped by ``pytest.importorskip`` fails unless the session may lack it."""
    return _fail_unless_may_lack((yield))


def _fail_unless_may_lack(report: _Report) -> _Report:
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return report
    found = _IMPORT_SKIP.search(str(report.longrepr[2]))
    if found is None:
        return report
    package = found.group(1).split(".")[0]
    if package not in os.environ.get(MAY_LACK, "").split(","):
        report.outcome = "failed"
        report.longrepr = (
            f"{report.longrepr[2]}\n{package} must be installed for this test: only a session "
            f"on a Python where it cannot be installed may skip it ({MAY_LACK}={package}, "
            "set by noxfile.py); install the dev dependencies (`nox -s tests`)."
        )
    return report
