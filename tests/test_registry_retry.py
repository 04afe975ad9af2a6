"""Registration in a retried uniflow task, and which configuration a registration uses."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytest.importorskip("michelangelo")  # not installable on 3.13: see noxfile.py

import michelangelo.uniflow.core as uniflow
import mlflow
import yaml
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer, reset
from tests.helpers import read_as_admin
from tests.helpers.uniflow import LocalTask


def test_a_retried_task_that_registers_again_gets_the_same_version(
    tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"retried-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    monkeypatch.setenv("MA_PIPELINE_RUN_NAME", f"pipeline-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("UF_LOCAL_RUN", "1")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_ON_RETRY", "resume")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_REGISTRY", "manifest")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_MANIFEST_DIR", str(tmp_path / "models"))
    registered: list[tuple[str, str, str]] = []

    @uniflow.task(config=LocalTask())
    @mm.tracked(experiment="retries")
    def train() -> str:
        classifier = LogisticRegression().fit([[0.0], [1.0], [0.2], [0.9]], [0, 1, 0, 1])
        info = mlflow.sklearn.log_model(classifier, name="model")
        registration = mm.register_model(info, name, kind="binary_classification")
        run = mlflow.active_run()
        assert run is not None
        assert registration.michelangelo is not None
        registered.append(
            (run.info.run_id, registration.mlflow.version, registration.michelangelo.name)
        )
        if len(registered) == 1:
            raise OSError("the pod was evicted")  # the platform runs the task again
        return registration.mlflow.version

    with pytest.raises(OSError, match="evicted"):
        train()
    reset()  # the retry runs in a new pod: nothing remembered
    assert train() == "1"
    (first_run, first_version, _first_model), (run_id, version, model) = registered
    assert (run_id, version, model) == (first_run, "1", f"{name}-1")  # resumed, same version
    assert first_version == "1"
    client = MlflowClient(tracking_server.url)
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    manifests = sorted(p.name for p in (tmp_path / "models" / "ml-team").iterdir())
    assert manifests == [f"{name}-1.yaml"]
    stored = client.get_run(run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["michelangelo.previous_error.type"] == "OSError"
    assert "michelangelo.error.type" not in stored.data.tags
    model_object = yaml.safe_load((tmp_path / "models" / "ml-team" / manifests[0]).read_text())
    assert model_object["spec"]["revisionId"] == 1


def test_an_explicit_settings_wins_over_the_open_tracked_run(
    tracking_server: TrackingServer, auth_server: TrackingServer, logged_model: object
) -> None:
    name = f"explicit-{uuid.uuid4().hex[:8]}"
    other = mm.Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=auth_server.admin_password,
    )
    with mm.tracking_run("explicit", settings=other) as run:
        classifier = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        info = mlflow.sklearn.log_model(classifier, name="model")
    ambient = mm.Settings(tracking_uri=tracking_server.url)
    with mm.tracking_run("explicit", settings=ambient):
        registration = mm.register_model(info, name, michelangelo=False, settings=other)
    assert registration.mlflow.run_id == run.info.run_id
    stored = read_as_admin(auth_server, run.info.run_id)
    assert stored.info.run_id == run.info.run_id
    assert not MlflowClient(tracking_server.url).search_model_versions(f"name = '{name}'")
