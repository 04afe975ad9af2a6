"""Helpers shared by several test modules."""

from __future__ import annotations

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer


def read_as_admin(server: TrackingServer, run_id: str) -> Run:
    """Read a run from the basic-auth server with the admin's credentials."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", server.admin_username)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
        return MlflowClient(server.url).get_run(run_id)
