"""Ray Train: data-parallel SGD on two workers, logged into the driver's tracked run.

The driver function is tracked; Ray Train V2 runs the training loop in two worker
processes that attach to the driver's run with ``worker_run()``:

- world rank 0 logs the validation loss and accuracy per epoch (the other rank's
  calls do nothing);
- ``worker_run(per_worker=True)`` logs each worker's loss on its own shard as
  ``shard_loss/rank0`` and ``shard_loss/rank1``.

Each worker trains a logistic regression with NumPy SGD on its half of the data, and
the two models are averaged after every epoch (through a small Ray actor), so both
workers continue from the same weights.

Runs anywhere with no server: without MLFLOW_TRACKING_URI the run goes to MLflow's
embedded local store (./mlflow.db). Set MLFLOW_TRACKING_URI to use a tracking server.

    pip install -e ".[examples,ray]"
    python examples/ray_train.py
"""

from __future__ import annotations

import os
import time
from typing import Any

import mlflow
import numpy as np
import ray
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

import michelangelo_mlflow as mm
from michelangelo_mlflow import ray as mm_ray

NUM_WORKERS = 2


@ray.remote(num_cpus=0)
class Averager:
    """Averages the workers' weights once every worker has sent its own."""

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.sent: dict[int, list[np.ndarray]] = {}

    def send(self, epoch: int, weights: np.ndarray) -> None:
        self.sent.setdefault(epoch, []).append(weights)

    def mean(self, epoch: int) -> np.ndarray | None:
        sent = self.sent.get(epoch, [])
        return np.mean(sent, axis=0) if len(sent) == self.num_workers else None


def make_data(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    features, labels = make_classification(
        n_samples=2_000, n_features=10, n_informative=6, n_clusters_per_class=1, random_state=seed
    )
    features = np.hstack([features, np.ones((len(features), 1))])  # a bias column
    x_train, x_val, y_train, y_val = train_test_split(features, labels, random_state=seed)
    return x_train, x_val, y_train, y_val


def log_loss(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-x @ weights)), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def sgd_epoch(
    weights: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float, batch: int, rng: Any
) -> np.ndarray:
    order = rng.permutation(len(x))
    for start in range(0, len(x), batch):
        rows = order[start : start + batch]
        p = 1.0 / (1.0 + np.exp(-x[rows] @ weights))
        weights = weights - lr * x[rows].T @ (p - y[rows]) / len(rows)
    return weights


def train_loop(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    x_train, x_val, y_train, y_val = make_data()
    x_shard, y_shard = x_train[rank::world], y_train[rank::world]
    averager = config["averager"]
    rng = np.random.default_rng(rank)
    weights = np.zeros(x_train.shape[1])

    with mm_ray.worker_run() as run, mm_ray.worker_run(per_worker=True) as shard:
        run.set_tags({"ray.world_size": world})
        for epoch in range(config["epochs"]):
            local = sgd_epoch(weights, x_shard, y_shard, config["lr"], config["batch_size"], rng)
            shard.log_metric("shard_loss", log_loss(local, x_shard, y_shard), step=epoch)
            ray.get(averager.send.remote(epoch, local))
            while (mean := ray.get(averager.mean.remote(epoch))) is None:
                time.sleep(0.05)  # the other worker has not finished its epoch yet
            weights = mean
            accuracy = float(np.mean(((x_val @ weights) > 0) == y_val))
            run.log_metrics(
                {"val_loss": log_loss(weights, x_val, y_val), "val_accuracy": accuracy},
                step=epoch,
            )


@mm.tracked(experiment="ray-train-example", run_name="sgd-data-parallel", log_params="config")
def train(config: dict[str, Any]) -> tuple[str, float]:
    """The driver: starts the trainer inside the tracked run; returns run id and accuracy."""
    trainer = DataParallelTrainer(
        train_loop,
        train_loop_config={**config, "averager": Averager.remote(NUM_WORKERS)},
        scaling_config=ScalingConfig(num_workers=NUM_WORKERS, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(
            name="sgd-data-parallel",
            storage_path=os.path.abspath("ray_results"),
            # The tracking URI, credentials and the run reach the workers this way.
            worker_runtime_env=mm_ray.runtime_env(),
        ),
    )
    trainer.fit()
    active = mlflow.active_run()
    assert active is not None
    # The workers logged into this run: read rank 0's last validation accuracy back.
    logged = mlflow.MlflowClient().get_run(active.info.run_id).data.metrics
    mlflow.log_metric("final_val_accuracy", logged["val_accuracy"])
    return active.info.run_id, logged["val_accuracy"]


def main() -> None:
    if not ray.is_initialized():  # in a Michelangelo Ray task, Ray is already initialized
        ray.init(num_cpus=NUM_WORKERS, include_dashboard=False)
    run_id, accuracy = train({"epochs": 5, "lr": 0.1, "batch_size": 32})
    print(f"run {run_id}: val_accuracy={accuracy:.3f}")


if __name__ == "__main__":
    main()
