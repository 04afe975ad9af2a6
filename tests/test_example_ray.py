"""examples/ray_train.py is a real script: run it as a user would, with a real local Ray."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

EXAMPLE = Path(__file__).parent.parent / "examples" / "ray_train.py"
_OURS = ("MLFLOW_", "MICHELANGELO_MLFLOW_", "MA_", "UF_", "RAY_ADDRESS")


def test_ray_train_example_logs_every_worker_into_the_driver_run(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ray-train-example")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sgd-data-parallel"
    assert run.data.params == {"epochs": "5", "lr": "0.1", "batch_size": "32"}
    assert run.data.tags["michelangelo.task"] == "__main__.train"
    assert run.data.tags["ray.world_size"] == "2"
    # World rank 0 alone logs validation metrics, once per epoch, and training helps.
    val_loss = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_loss"))
    assert [step for step, _ in val_loss] == [0, 1, 2, 3, 4]
    assert val_loss[-1][1] < val_loss[0][1]
    assert run.data.metrics["final_val_accuracy"] == run.data.metrics["val_accuracy"] > 0.7
    # per_worker=True: each rank's shard loss under its own key.
    shard_keys = sorted(k for k in run.data.metrics if k.startswith("shard_loss"))
    assert shard_keys == ["shard_loss/rank0", "shard_loss/rank1"]
    for key in shard_keys:
        assert len(client.get_metric_history(run_id, key)) == 5
    assert re.search(rf"run {run_id}: val_accuracy=0\.\d{{3}}", result.stdout)
