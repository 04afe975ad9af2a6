"""examples/lightning_finetune.py: upstream's gpt_oss_20b_finetune task, ported, run as is.

It runs Michelangelo's own ``LightningTrainer`` (a Ray ``TorchTrainer``) inside a
``@uniflow.task`` with ``@mm.tracked``, and logs the way upstream does: an
``MLFlowLogger`` (given the tracked run's id) and ``log_checkpoint_to_mlflow``'s
``mlflow.start_run(run_id=..., nested=True)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer
from tests.frameworks.conftest import all_run_ids

ROOT = Path(__file__).parents[2]


def test_the_ported_task_trains_and_logs_into_one_tracked_run(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_server.url)
    before = all_run_ids(client)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MA_", "UF_"))}
    result = subprocess.run(
        [sys.executable, "-m", "examples.lightning_finetune"],
        cwd=ROOT,
        env={
            **clean,
            "MLFLOW_TRACKING_URI": tracking_server.url,
            "RAY_STORAGE_PATH": str(tmp_path / "ray"),
            "UF_STORAGE_URL": str(tmp_path / "uf"),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (run_id,) = all_run_ids(client) - before
    assert f"finetune finished: run {run_id}" in result.stdout
    stored = client.get_run(run_id)
    assert stored.info.status == "FINISHED"
    # @mm.tracked(run_name="training"), then MLFlowLogger(run_id=..., run_name="training-tiny"):
    # the logger's name, applied when it first reads the run, is the later one and wins.
    assert stored.info.run_name == "training-tiny"
    assert stored.data.tags["michelangelo.task"] == "examples.lightning_finetune.simple_train_gpt"
    assert stored.data.tags["model_name"] == "tiny"  # MLFlowLogger's tags=, set by the port
    assert stored.data.params["model_name"] == "tiny"  # mlflow_logger.log_hyperparams
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert steps, "the Ray Train worker's Lightning logger logged no train_loss"
    assert steps == sorted(steps)
    assert client.get_metric_history(run_id, "val_loss")


def test_the_checkpoint_helper_logs_into_the_tracked_run(
    settings: mm.Settings, tmp_path: Path
) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from examples.lightning_finetune import log_checkpoint_to_mlflow
    finally:
        sys.path.remove(str(ROOT))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "checkpoint.ckpt").write_bytes(b"c" * 128)
    with mm.tracking_run("finetune-checkpoint", settings=settings) as run:
        uri = log_checkpoint_to_mlflow(str(tmp_path / "ckpt"), run.info.run_id)
    client = MlflowClient(settings.tracking_uri)
    assert uri == f"runs:/{run.info.run_id}/checkpoint"
    listed = [f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")]
    assert listed == ["checkpoint/checkpoint.ckpt"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
