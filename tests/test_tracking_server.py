"""``michelangelo_mlflow.testing.TrackingServer``: the store and worker options."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer


def test_workers_below_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        TrackingServer(tmp_path, workers=0)


@pytest.mark.slow
def test_another_store_and_workers_serve_and_log_each_request(tmp_path: Path) -> None:
    store = tmp_path / "elsewhere" / "runs.db"
    store.parent.mkdir()
    with TrackingServer(
        tmp_path / "server", backend_store_uri=f"sqlite:///{store}", workers=2
    ) as server:
        assert repr(server) == f"TrackingServer(port={server.port}, workers=2)"
        client = MlflowClient(server.url)
        run_id = client.create_run(client.create_experiment("options")).info.run_id
        client.log_metric(run_id, "auc", 0.9)
        assert client.get_metric_history(run_id, "auc")[0].value == 0.9
        log = server.log_path.read_text()
    assert store.stat().st_size > 0
    assert not (tmp_path / "server" / "mlflow.db").exists()
    assert '"POST /api/2.0/mlflow/runs/log-metric HTTP/1.1" 200' in log
