"""Ray Train's ``TorchTrainer`` and Ray Tune's ``MLflowLoggerCallback`` inside a tracked run.

One local Ray (2 CPUs) serves the module. Ray Train workers log through
``mm.ray.worker_run()`` (into the driver's tracked run) and through Ray's own
``setup_mlflow`` (a run of their own, made a child with the ``mlflow.parentRunId``
tag, the one line docs/frameworks.md adds); a worker's terminal status for the
driver's run (Lightning's ``finalize``) is not sent. Ray Tune's callback runs in the driver
and creates one run per trial with ``MlflowClient().create_run()``: with the logging
path's child-run rule, each trial is a child of the tracked run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback, setup_mlflow
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

import michelangelo_mlflow as mm
from michelangelo_mlflow import ray as mm_ray
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import kill_on_signal, wait_for
from tests.frameworks.conftest import (
    PARENT,
    all_run_ids,
    children_of,
    dict_of,
    experiment_name,
    points,
)

STEPS = 5
_ENV_PREFIXES = ("MLFLOW_", "MICHELANGELO_MLFLOW_", "DATABRICKS_")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """A local Ray whose processes inherit no MLflow variable from this process."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(_ENV_PREFIXES):
                patch.delenv(name)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train_loop(config: dict[str, Any]) -> None:
    """Tiny SGD; rank 0 logs each step's loss through worker_run() and setup_mlflow."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    own = setup_mlflow(
        config,
        tracking_uri=os.environ["MLFLOW_TRACKING_URI"],  # from mm.ray.runtime_env()
        experiment_name=config["experiment"],
        tags={PARENT: config["parent"]},  # the line that makes it a child of the task's run
    )
    handshake = config.get("handshake")
    with mm_ray.worker_run() as run:
        for step in range(STEPS):
            if handshake and run.logging and step == STEPS // 2:  # the driver kills the server
                Path(handshake, "logged-half").touch()
                wait_for(Path(handshake, "killed"))
            x = torch.randn(8, 4)
            loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log_metric("loss", float(loss), step=step)
            own.log_metric("ray_loss", float(loss), step=step)
    # What Lightning's MLFlowLogger(run_id=<the driver's run>).finalize() does on rank 0,
    # outside worker_run(): the driver's block decides the run's status, not a worker.
    # (MLflow reads the run first, to print its URL: during an outage, the worker's
    # spool answers that read.)
    if ray.train.get_context().get_world_rank() == 0:
        MlflowClient().set_terminated(config["parent"], "FINISHED")


def fit_two_workers(config: dict[str, Any], tmp_path: Path) -> None:
    """Train ``train_loop`` on two Ray Train workers that get the tracked run's context."""
    TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(
            name=f"frameworks-{config['experiment']}",
            storage_path=str(tmp_path / "ray"),
            worker_runtime_env=mm_ray.runtime_env(),
        ),
    ).fit()


def test_torch_trainer_workers_log_into_the_run_and_a_child(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    before = all_run_ids(client)
    name = experiment_name("ray-train")
    with mm.tracking_run(name, "train", settings=settings) as run:
        fit_two_workers({"experiment": name, "parent": run.info.run_id}, tmp_path)
        assert client.get_run(run.info.run_id).info.status == "RUNNING"  # not ended by the workers
    (child,) = children_of(client, run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id, child.info.run_id}
    tracked = points(client, run.info.run_id, "loss")
    assert [s for s, _ in tracked] == list(range(STEPS))  # rank 0 only
    assert points(client, child.info.run_id, "ray_loss") == tracked  # the same values
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    # setup_mlflow never ends its run: the block gives it the block's status.
    assert client.get_run(child.info.run_id).info.status == "FINISHED", dict_of(child)


def test_torch_trainer_workers_lose_no_point_to_an_outage(
    own_server: TrackingServer, tmp_path: Path
) -> None:
    """The server is killed half-way through training and restarted after fit() returned.

    Rank 0's writes through worker_run() and through setup_mlflow's run both take the
    worker's spool; Ray kills the training actors when fit() returns, and the driver's
    block end sends what they left, for the run and for the child.
    """
    client = MlflowClient(own_server.url)
    handshake = tmp_path / "handshake"
    handshake.mkdir()

    killer = kill_on_signal(own_server, handshake)
    name = experiment_name("ray-train-outage")
    settings = mm.Settings(tracking_uri=own_server.url, spool_grace=5.0)
    with mm.tracking_run(name, "train", settings=settings) as run:
        config = {"experiment": name, "parent": run.info.run_id, "handshake": str(handshake)}
        fit_two_workers(config, tmp_path)
        killer.join(10)
        assert (handshake / "killed").exists()  # half of the steps were logged into an outage
        own_server.restart()
    (child,) = children_of(client, run.info.run_id)
    tracked = points(client, run.info.run_id, "loss")
    assert [s for s, _ in tracked] == list(range(STEPS))
    assert points(client, child.info.run_id, "ray_loss") == tracked
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert client.get_run(child.info.run_id).info.status == "FINISHED", dict_of(child)


def trainable(config: dict[str, Any]) -> None:
    for step in range(STEPS):
        tune.report({"score": config["x"] * step})


def test_tune_mlflow_logger_callback_makes_each_trial_a_child(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    before = all_run_ids(client)
    name = experiment_name("ray-tune")
    with mm.tracking_run(name, "tune", settings=settings) as run:
        callback = MLflowLoggerCallback(
            tracking_uri=settings.tracking_uri, experiment_name=name, save_artifact=False
        )
        tune.Tuner(
            trainable,
            param_space={"x": tune.grid_search([1, 2])},
            run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), callbacks=[callback]),
        ).fit()
    trials = children_of(client, run.info.run_id)
    assert all_run_ids(client) - before == {run.info.run_id, *(t.info.run_id for t in trials)}
    assert sorted(t.data.params["x"] for t in trials) == ["1", "2"]
    for trial in trials:
        x = float(trial.data.params["x"])
        assert [v for _, v in points(client, trial.info.run_id, "score")] == [
            x * step for step in range(STEPS)
        ]
        assert trial.info.status == "FINISHED", dict_of(trial)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
