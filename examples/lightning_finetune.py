"""Distributed GPT fine-tuning task using Ray Train + PyTorch Lightning, tracked.

A port of michelangelo-examples 0.7.0's
``gpt_oss_20b_finetune/pipelines/train/train.py`` to michelangelo-mlflow: its MLflow
usage changes in three places, marked ``# michelangelo-mlflow:`` (see
docs/frameworks.md). The model is a tiny causal LM built here instead of GPT-2 with
LoRA, so that it trains on a CPU in seconds; the rest is upstream's code.

Locally, from the project root, with a tracking server:

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m examples.lightning_finetune
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import michelangelo.uniflow.core as uniflow
import mlflow
from michelangelo.lib.trainer.torch.pytorch_lightning.lightning_trainer import (
    LightningTrainer,
    LightningTrainerParam,
)
from michelangelo.uniflow.plugins.ray import RayTask, create_run_config
from michelangelo.workflow.variables import DatasetVariable
from pytorch_lightning.loggers import MLFlowLogger
from ray.train import CheckpointConfig, ScalingConfig
from ray.train.lightning import RayFSDPStrategy

import michelangelo_mlflow as mm

if TYPE_CHECKING:
    from ray.data import Dataset

log = logging.getLogger(__name__)

__all__ = ["create_gpt_model", "log_checkpoint_to_mlflow", "simple_train_gpt"]

VOCAB = 64
"""The tiny model's vocabulary (token ids 0..63) and sequence length below."""
SEQUENCE = 16


def create_gpt_model(model_name: str, learning_rate: float, **_: object):  # type: ignore[no-untyped-def]
    """A tiny causal LM (embedding, one linear layer) instead of GPT-2 with LoRA."""
    import pytorch_lightning as pl
    import torch

    class TinyCausalLM(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, 16)
            self.head = torch.nn.Linear(16, VOCAB)

        def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            ids = batch["input_ids"].long()
            logits = self.head(self.embed(ids[:, :-1]))
            return torch.nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)
            )

        def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
            loss = self._loss(batch)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
            self.log("val_loss", self._loss(batch), sync_dist=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=learning_rate)

    return TinyCausalLM()


def log_checkpoint_to_mlflow(checkpoint_path: str, run_id: str) -> str:
    """Log a checkpoint to MLflow artifacts (persisted to S3 automatically).

    Args:
        checkpoint_path: Local path to the checkpoint directory or file.
        run_id: MLflow run ID to log artifacts to.

    Returns:
        MLflow artifact URI for the checkpoint.
    """
    log.info("Logging checkpoint to MLflow artifacts: %s", checkpoint_path)
    log.info("Using MLflow run ID: %s", run_id)

    # michelangelo-mlflow: the tracked run is the active run; start_run(run_id=...) without
    # nested=True would raise (a ConfigurationError naming this line).
    if os.path.isdir(checkpoint_path):
        with mlflow.start_run(run_id=run_id, nested=True):
            mlflow.log_artifacts(checkpoint_path, "checkpoint")
        artifact_path = "checkpoint"
    else:
        with mlflow.start_run(run_id=run_id, nested=True):
            mlflow.log_artifact(checkpoint_path, "checkpoint")
        artifact_path = f"checkpoint/{os.path.basename(checkpoint_path)}"

    artifact_uri = f"runs:/{run_id}/{artifact_path}"
    log.info("Checkpoint logged to MLflow: %s", artifact_uri)
    return artifact_uri


@uniflow.task(
    config=RayTask(
        head_cpu=2,
        head_memory="8Gi",
        worker_cpu=1,
        worker_memory="4Gi",
        worker_instances=1,
    ),
    cache_enabled=False,
)
# michelangelo-mlflow: one tracked run per task call, FAILED when the task fails.
@mm.tracked(experiment="gpt-finetune-experiment", run_name="training")
def simple_train_gpt(
    train_dv: DatasetVariable,
    validation_dv: DatasetVariable,
    model_name: str = "gpt2",
    num_epochs: int = 1,
    batch_size: int = 1,
    learning_rate: float = 5e-5,
    use_lora: bool = True,
    lora_rank: int = 16,
    num_workers: int = 1,
    use_gpu: bool = True,
):
    """Fine-tune a GPT causal-LM checkpoint via Ray Train + Lightning + LoRA.

    Args:
        train_dv: Training dataset variable.
        validation_dv: Validation dataset variable.
        model_name: Base model name (e.g., "gpt2").
        num_epochs: Number of training epochs.
        batch_size: Training batch size.
        learning_rate: Learning rate for optimization.
        use_lora: Whether to use LoRA (Low-Rank Adaptation).
        lora_rank: LoRA rank for parameter-efficient fine-tuning.
        num_workers: Number of worker nodes for distributed training.
        use_gpu: Whether to use GPU acceleration.

    Returns:
        Dict with the checkpoint's S3 URI and the MLflow run ID.
    """
    log.info("Starting distributed training with model: %s", model_name)
    log.info("Training with %d workers, use_gpu: %s", num_workers, use_gpu)

    train_dv.load_ray_dataset()
    train_data: Dataset = train_dv.value

    validation_dv.load_ray_dataset()
    validation_data: Dataset = validation_dv.value

    import torch

    if torch.backends.mps.is_available():
        # Apple Silicon - use CPU to avoid MPS/FSDP conflicts.
        use_gpu = False
        log.info("Detected Apple Silicon (MPS) - using CPU for compatibility")
    elif not torch.cuda.is_available():
        use_gpu = False
        log.info("No CUDA available - using CPU")

    scaling_config = ScalingConfig(
        resources_per_worker={"CPU": 2},
        num_workers=num_workers,
        use_gpu=use_gpu,
    )
    log.info("scaling_config: %r", scaling_config)

    # Use the same S3 bucket that workers already have access to (s3://default),
    # avoiding permission issues with creating separate buckets.
    storage_path = os.getenv("RAY_STORAGE_PATH", "s3://default/ray_checkpoints")
    run_config = create_run_config(
        name=f"gpt-distributed-{model_name.replace('/', '-')}",
        storage_path=storage_path,
        checkpoint_config=CheckpointConfig(
            num_to_keep=1,
            checkpoint_score_attribute="val_loss",
            checkpoint_score_order="min",
        ),
    )
    log.info("Using %s for Ray checkpoint storage", storage_path)
    log.info("run_config: %r", run_config)

    experiment_name = "gpt-finetune-experiment"
    mlflow_logger = MLFlowLogger(
        experiment_name=experiment_name,
        tracking_uri=mlflow.get_tracking_uri(),
        run_name=f"training-{model_name}",
        # michelangelo-mlflow: log into the tracked run (Lightning then ignores
        # run_name= and tags=; the SDK applies them when the logger first reads the
        # run, and mlflow.set_tags below sets the tags on versions before that).
        run_id=mlflow.active_run().info.run_id,
        tags={
            "model_name": model_name,
            "use_lora": str(use_lora),
            "lora_rank": str(lora_rank),
            "training_type": "distributed",
        },
    )
    mlflow.set_tags(mlflow_logger.tags)  # michelangelo-mlflow: see run_id= above

    mlflow_logger.log_hyperparams(
        {
            "model_name": model_name,
            "learning_rate": learning_rate,
            "use_lora": use_lora,
            "lora_rank": lora_rank,
            "batch_size": batch_size,
            "num_epochs": num_epochs,
        }
    )

    if torch.backends.mps.is_available():
        lightning_trainer_kwargs = {
            "accelerator": "cpu",
            "precision": 32,  # MPS doesn't support mixed precision well.
            "log_every_n_steps": 10,
            "val_check_interval": 0.25,
            "logger": mlflow_logger,
        }
    elif use_gpu and torch.cuda.is_available():
        lightning_trainer_kwargs = {
            "strategy": RayFSDPStrategy(
                sharding_strategy="SHARD_GRAD_OP",
            ),
            "precision": "16-mixed",
            "log_every_n_steps": 10,
            "val_check_interval": 0.25,
            "logger": mlflow_logger,
        }
    else:
        lightning_trainer_kwargs = {
            "accelerator": "cpu",
            "precision": 32,
            "log_every_n_steps": 10,
            # Ray Data feeds an IterableDataset: Lightning refuses a fraction here
            "val_check_interval": 1.0,
            "logger": mlflow_logger,
        }

    trainer_param = LightningTrainerParam(
        create_model_fn=create_gpt_model,
        create_model_fn_kwargs={
            "model_name": model_name,
            "learning_rate": learning_rate,
            "use_lora": use_lora,
            "lora_rank": lora_rank,
        },
        train_data=train_data,
        val_data=validation_data,
        batch_size=batch_size,
        num_epochs=num_epochs,
        lightning_trainer_kwargs=lightning_trainer_kwargs,
    )

    trainer = LightningTrainer(trainer_param)

    log.info("Model configuration:")
    log.info("  Model name: %s", model_name)
    log.info("  Learning rate: %s", learning_rate)
    log.info("  Use LoRA: %s", use_lora)
    log.info("  LoRA rank: %s", lora_rank)
    log.info("  Batch size: %s", batch_size)
    log.info("  Number of epochs: %s", num_epochs)

    log.info("Starting distributed Lightning training...")
    result = trainer.train(run_config, scaling_config)
    log.info("Distributed training completed successfully")

    run_id = mlflow_logger.run_id
    log.info("Training completed, MLflow run: %s", run_id)

    checkpoint = result["checkpoint_path"]
    if hasattr(checkpoint, "as_directory"):
        checkpoint_path = checkpoint.path
    else:
        checkpoint_path = checkpoint

    log.info("Raw checkpoint path from Ray: %s", checkpoint_path)

    if storage_path.startswith("s3://") and not checkpoint_path.startswith("s3://"):
        checkpoint_path = f"s3://{checkpoint_path}"
        log.info("Corrected checkpoint path for S3: %s", checkpoint_path)

    log.info("Checkpoint already saved to S3, using S3 URI directly")

    return {
        "checkpoint_path": checkpoint_path,
        "mlflow_run_id": run_id,
    }


def token_rows(count: int, seed: int) -> list[dict[str, object]]:
    """Random token sequences: the tiny model's training and validation data."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, VOCAB, SEQUENCE)} for _ in range(count)]


if __name__ == "__main__":
    import tempfile

    import ray.data

    os.environ.setdefault("UF_LOCAL_RUN", "1")
    # the task's RayTask.pre_run() calls ray.init(**_RAY_INIT_KWARGS): Ray is up already
    os.environ.setdefault("_RAY_INIT_KWARGS", "{'ignore_reinit_error': True}")
    os.environ.setdefault("RAY_STORAGE_PATH", tempfile.mkdtemp(prefix="ray-checkpoints-"))
    # upstream asks for 2 CPUs per Ray Train worker; Ray Data's read tasks need more
    ray.init(num_cpus=4, include_dashboard=False)
    os.environ.setdefault("UF_STORAGE_URL", tempfile.mkdtemp(prefix="uf-storage-"))
    train = DatasetVariable.create(ray.data.from_items(token_rows(160, seed=0)))
    validation = DatasetVariable.create(ray.data.from_items(token_rows(16, seed=1)))
    train.save()  # as the pipeline's data task would: the task loads them from storage
    validation.save()
    result = simple_train_gpt(train, validation, model_name="tiny", batch_size=8, num_workers=1)
    print(f"finetune finished: run {result['mlflow_run_id']}, {result['checkpoint_path']}")
