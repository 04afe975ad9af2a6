"""Shared fixtures: real MLflow servers and a clean MLflow state for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from michelangelo_mlflow.testing import TrackingServer

_ENV_PREFIXES = ("MLFLOW_", "MICHELANGELO_MLFLOW_", "MA_", "UF_", "DATABRICKS_")
_ENV_NAMES = ("TRACKING_URI", "KUBECONFIG", "KUBERNETES_SERVICE_HOST")


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
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
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real MLflow 3 server (sqlite, served artifacts) shared by the session."""
    with TrackingServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real MLflow 3 server with ``--app-name basic-auth``, shared by the session."""
    with TrackingServer(tmp_path_factory.mktemp("mlflow-auth"), basic_auth=True) as server:
        yield server
