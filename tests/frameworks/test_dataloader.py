"""PyTorch DataLoader workers (forked processes) that log into the run, as with plain MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow.tracking import MlflowClient

from michelangelo_mlflow.testing import TrackingServer

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import sys

    import mlflow
    import torch
    from mlflow.tracking import MlflowClient
    from torch.utils.data import DataLoader, Dataset


    class Logged(Dataset):
        def __init__(self, run_id):
            self.run_id = run_id

        def __len__(self):
            return 40

        def __getitem__(self, index):
            info = torch.utils.data.get_worker_info()
            MlflowClient().log_metric(
                self.run_id, f"item/w{info.id}", float(index), step=index, timestamp=1000 + index
            )
            return torch.tensor([float(index)])


    def main():
        mode, experiment = sys.argv[1:3]
        if mode == "plain":
            mlflow.set_experiment(experiment)
            run = mlflow.start_run()
        else:
            import michelangelo_mlflow as mm

            tracked = mm.tracking_run(experiment)
            run = tracked.__enter__()
        # Workers are forked; with persistent_workers=False they are shut down (and
        # terminated if slow) at the end of each epoch, as DataLoader does.
        for _ in DataLoader(Logged(run.info.run_id), batch_size=4, num_workers=2):
            pass
        if mode == "plain":
            mlflow.end_run()
        else:
            tracked.__exit__(None, None, None)
        print(run.info.run_id)


    main()
    """
)


def run_program(mode: str, url: str, experiment: str, cwd: Path) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, experiment],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[-1]


def test_dataloader_workers_log_what_plain_mlflow_would(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_server.url)
    plain = run_program("plain", tracking_server.url, f"dataloader-plain-{tmp_path.name}", tmp_path)
    ours = run_program("sdk", tracking_server.url, f"dataloader-{tmp_path.name}", tmp_path)

    def landed(run_id: str) -> tuple[str, list[tuple[str, int, float]]]:
        run = client.get_run(run_id)
        points = [
            (key, m.step, m.value)
            for key in run.data.metrics
            for m in client.get_metric_history(run_id, key)
        ]
        return run.info.status, sorted(points)

    assert landed(ours) == landed(plain)
    status, points = landed(ours)
    assert status == "FINISHED"
    assert sorted(step for _, step, _ in points) == list(range(40))  # every item, once
    assert not (tmp_path / ".michelangelo-mlflow-spool").exists()
