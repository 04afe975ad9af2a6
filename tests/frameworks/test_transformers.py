"""Hugging Face ``Trainer(report_to="mlflow")`` (``MLflowCallback``) inside a tracked run.

A one-layer GPT-2 built from a config (no download) trains for a few steps on the
CPU, logging every step. ``trainer.state.log_history`` is what the framework logged;
the tracked run on the server must hold the same points, and no other run appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer
from tests.frameworks.conftest import Outage, all_run_ids, experiment_name, points

STEPS = 12
KEYS = ("loss", "learning_rate", "grad_norm")


def tiny_trainer(tmp_path: Path, callbacks: list[TrainerCallback] | None = None) -> Trainer:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    ids = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": row, "labels": row} for row in ids]
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        logging_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to="mlflow",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    return Trainer(
        model=GPT2LMHeadModel(config),
        args=arguments,
        train_dataset=rows,  # type: ignore[arg-type]
        callbacks=callbacks,
    )


def logged(trainer: Trainer, key: str) -> list[tuple[int, float]]:
    return sorted((e["step"], float(e[key])) for e in trainer.state.log_history if key in e)


def same_points(client: MlflowClient, run_id: str, trainer: Trainer) -> None:
    for key in KEYS:
        expected = logged(trainer, key)
        got = points(client, run_id, key)
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), key
    assert len(logged(trainer, "loss")) == STEPS


def test_trainer_logs_params_and_metrics_into_the_tracked_run(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    before = all_run_ids(client)
    with mm.tracking_run(experiment_name("hf"), "finetune", settings=settings) as run:
        trainer = tiny_trainer(tmp_path)
        trainer.train()
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
    stored = client.get_run(run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id}
    same_points(client, run.info.run_id, trainer)
    assert stored.data.params["learning_rate"] == "0.001"
    assert stored.data.params["max_steps"] == str(STEPS)
    assert stored.data.params["n_layer"] == "1"  # the model's config
    assert "train_runtime" in stored.data.metrics  # the summary Trainer logs at the end
    assert stored.info.status == "FINISHED"


class KillAt(TrainerCallback):
    def __init__(self, outage: Outage, step: int) -> None:
        self.outage, self.step = outage, step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            self.outage.kill(self.step)


@pytest.mark.slow
def test_server_killed_mid_training_loses_no_point(
    own_server: TrackingServer, tmp_path: Path
) -> None:
    settings = mm.Settings(tracking_uri=own_server.url)
    outage = Outage(own_server)
    with mm.tracking_run(experiment_name("hf"), "finetune", settings=settings) as run:
        trainer = tiny_trainer(tmp_path, callbacks=[KillAt(outage, step=3)])
        trainer.train()
        outage.wait_restarted()
    client = MlflowClient(own_server.url)
    assert outage.killed_at == 3
    same_points(client, run.info.run_id, trainer)
    stored = client.get_run(run.info.run_id)
    assert stored.data.params["max_steps"] == str(STEPS)
    assert stored.info.status == "FINISHED"
    assert {r.info.run_id for r in client.search_runs([run.info.experiment_id])} == {
        run.info.run_id
    }
