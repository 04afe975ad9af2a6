"""PyTorch Lightning's ``MLFlowLogger`` and ``mlflow.pytorch.autolog`` inside a tracked run.

Lightning is ``pytorch_lightning`` here, as Michelangelo's trainer and examples use it.

A tiny ``LightningModule`` trains on the CPU for 2 epochs of 8 steps, logging
``train_loss`` every step and ``val_loss`` every epoch, to an ``MLFlowLogger`` and to a
``CSVLogger`` beside it: the CSV file is what the framework logged, and the points on
the server must be the same.

Some tests here expect the logging path's store-level rules (issue 14, item 7, and
issue 15): a third party's terminal status for the tracked run is held until the
block ends, and ``MlflowClient().create_run()`` inside a tracked run makes a child of
it whose records go through the spool.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import mlflow
import pytest
import pytorch_lightning as L
import torch
from mlflow.tracking import MlflowClient
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset

import michelangelo_mlflow as mm
from michelangelo_mlflow.testing import TrackingServer
from tests.frameworks.conftest import (
    PARENT,
    Outage,
    all_run_ids,
    children_of,
    dict_of,
    experiment_name,
    points,
    runs_of,
)

EPOCHS = 2
STEPS_PER_EPOCH = 8


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, _: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, _: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader() -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS_PER_EPOCH * 4, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


class KillAt(Callback):
    """Kills the tracking server after a training step (the outage tests)."""

    def __init__(self, outage: Outage, step: int) -> None:
        self.outage, self.step = outage, step

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if trainer.global_step == self.step:
            self.outage.kill(self.step)


def fit(logger: MLFlowLogger, tmp_path: Path, **trainer: Any) -> list[dict[str, str]]:
    """Train Tiny with ``logger`` and a CSVLogger; the CSV rows (what Lightning logged)."""
    csv_logger = CSVLogger(str(tmp_path / "csv"), name="", version="")
    L.Trainer(
        max_epochs=EPOCHS,
        logger=[logger, csv_logger],
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"enable_checkpointing": False, **trainer},
    ).fit(Tiny(), loader(), loader())
    with open(Path(csv_logger.log_dir) / "metrics.csv") as file:
        return list(csv.DictReader(file))


def logged(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return sorted((int(r["step"]), float(r[key])) for r in rows if r.get(key))


def same_points(client: MlflowClient, run_id: str, rows: list[dict[str, str]]) -> None:
    for key in ("train_loss", "val_loss"):
        expected = logged(rows, key)
        assert expected, key
        got = points(client, run_id, key)
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), key
    assert len(logged(rows, "train_loss")) == EPOCHS * STEPS_PER_EPOCH


def test_logger_without_run_id_logs_into_a_child_of_the_tracked_run(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    """The upstream pattern unchanged: MLFlowLogger(experiment_name=, run_name=, tags=)."""
    tracked, lightning_experiment = experiment_name("task"), experiment_name("lightning")
    before = all_run_ids(client)
    with mm.tracking_run(tracked, "task", settings=settings) as run:
        logger = MLFlowLogger(
            experiment_name=lightning_experiment,
            tracking_uri=settings.tracking_uri,
            run_name="training-tiny",
            tags={"model_name": "tiny"},
        )
        logger.log_hyperparams({"lr": 0.05})
        rows = fit(logger, tmp_path)
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
    (child,) = children_of(client, run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id, child.info.run_id}
    assert child.info.run_id == logger.run_id
    assert child.data.tags[PARENT] == run.info.run_id
    assert [r.info.run_id for r in runs_of(client, lightning_experiment)] == [logger.run_id]
    assert child.info.run_name == "training-tiny"
    assert child.data.tags["model_name"] == "tiny"
    assert child.data.params == {"lr": "0.05"}
    same_points(client, child.info.run_id, rows)
    assert child.info.status == "FINISHED"  # Lightning's finalize() ended its own run
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_logger_with_run_id_logs_into_the_tracked_run_and_finalize_does_not_end_it(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    before = all_run_ids(client)
    with mm.tracking_run(experiment_name("task"), "task", settings=settings) as run:
        logger = MLFlowLogger(tracking_uri=settings.tracking_uri, run_id=run.info.run_id)
        logger.log_hyperparams({"lr": 0.05})
        rows = fit(logger, tmp_path)  # finalize(): set_terminated(run_id, "FINISHED")
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
        mlflow.log_metric("after_fit", 1.0)
    stored = client.get_run(run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id}
    assert stored.data.params["lr"] == "0.05"
    assert stored.data.metrics["after_fit"] == 1.0
    same_points(client, run.info.run_id, rows)
    assert stored.info.status == "FINISHED"


def test_logger_with_run_id_still_applies_its_tags_and_run_name(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    """Lightning drops tags= and run_name= given run_id=; the SDK applies them, once."""
    before = all_run_ids(client)
    with mm.tracking_run(experiment_name("task"), "task", settings=settings) as run:
        logger = MLFlowLogger(
            tracking_uri=settings.tracking_uri,
            run_id=run.info.run_id,
            run_name="training-tiny",
            tags={"model_name": "tiny", "epochs": EPOCHS},
        )
        rows = fit(logger, tmp_path)
        mlflow.set_tag("model_name", "tiny-v2")  # the user's own later tag wins
    stored = client.get_run(run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id}
    assert stored.info.run_name == "training-tiny"
    assert stored.data.tags["model_name"] == "tiny-v2"
    assert stored.data.tags["epochs"] == str(EPOCHS)
    same_points(client, run.info.run_id, rows)
    assert stored.info.status == "FINISHED"


def test_a_failure_after_fit_wins_over_finalizes_finished(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="evaluation failed"):
        with mm.tracking_run(experiment_name("task"), "task", settings=settings) as run:
            fit(MLFlowLogger(tracking_uri=settings.tracking_uri, run_id=run.info.run_id), tmp_path)
            raise RuntimeError("evaluation failed")
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_log_model_checkpoints_land_in_the_tracked_run(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    with mm.tracking_run(experiment_name("task"), "task", settings=settings) as run:
        logger = MLFlowLogger(
            tracking_uri=settings.tracking_uri, run_id=run.info.run_id, log_model=True
        )
        checkpoint = ModelCheckpoint(str(tmp_path / "ckpt"), monitor="val_loss", save_top_k=1)
        fit(logger, tmp_path, callbacks=[checkpoint], enable_checkpointing=True)
    best = Path(checkpoint.best_model_path)
    listed = {f.path for f in client.list_artifacts(run.info.run_id, best.stem)}
    assert listed == {f"{best.stem}/{n}" for n in (best.name, "metadata.yaml", "aliases.txt")}
    local = client.download_artifacts(run.info.run_id, f"{best.stem}/{best.name}", str(tmp_path))
    assert Path(local).read_bytes() == best.read_bytes()


def test_autolog_lightning_logs_into_the_tracked_run(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    before = all_run_ids(client)
    autolog = {"pytorch_lightning": {"log_models": False, "checkpoint": False}}
    with mm.tracking_run(experiment_name("task"), autolog=autolog, settings=settings) as run:
        L.Trainer(
            max_epochs=EPOCHS,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(Tiny(), loader(), loader())
    stored = client.get_run(run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id}
    assert stored.data.tags["mlflow.autologging"] == "pytorch"
    assert [s for s, _ in points(client, run.info.run_id, "train_loss")] == list(range(EPOCHS))
    assert stored.data.params["epochs"] == str(EPOCHS)
    assert stored.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("with_run_id", [True, False], ids=["run_id", "child"])
def test_server_killed_mid_training_loses_no_point(
    own_server: TrackingServer, tmp_path: Path, with_run_id: bool
) -> None:
    settings = mm.Settings(tracking_uri=own_server.url)
    outage = Outage(own_server)
    with mm.tracking_run(experiment_name("task"), "task", settings=settings) as run:
        options: dict[str, Any] = {"run_id": run.info.run_id} if with_run_id else {}
        if not with_run_id:
            options["experiment_name"] = experiment_name("lightning")
        logger = MLFlowLogger(tracking_uri=own_server.url, log_model=True, **options)
        checkpoint = ModelCheckpoint(str(tmp_path / "ckpt"), monitor="val_loss", save_top_k=1)
        rows = fit(
            logger,
            tmp_path,
            callbacks=[checkpoint, KillAt(outage, step=3)],
            enable_checkpointing=True,
        )
        outage.wait_restarted()
    client = MlflowClient(own_server.url)
    assert outage.killed_at == 3
    target = logger.run_id
    assert target is not None
    if not with_run_id:
        assert [c.info.run_id for c in children_of(client, run.info.run_id)] == [target]
    same_points(client, target, rows)
    best = Path(checkpoint.best_model_path)
    assert best.name in {Path(f.path).name for f in client.list_artifacts(target, best.stem)}
    stored = [client.get_run(i) for i in {run.info.run_id, target}]
    assert [r.info.status for r in stored] == ["FINISHED"] * len(stored), list(map(dict_of, stored))
    assert not os.environ.get("MLFLOW_RUN_ID")
