"""Propagate the driver's tracked run to Ray tasks, actors and Ray Train workers.

Ray workers are separate processes, often on other nodes: they see neither the
driver's MLflow globals nor its credentials. :func:`runtime_env` builds a Ray
runtime env whose ``env_vars`` carry them, the way Ray passes environment, together
with ``MICHELANGELO_MLFLOW_WORKER_CONTEXT`` (run id, experiment id, tracking URI;
no secret). Inside the worker, :func:`worker_run` attaches to the run::

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    import michelangelo_mlflow as mm
    from michelangelo_mlflow import ray as mm_ray


    def train_loop(config):
        with mm_ray.worker_run() as run:  # world rank 0 logs, the others do nothing
            for epoch in range(config["epochs"]):
                run.log_metric("loss", 1.0 / (epoch + 1), step=epoch)


    @mm.tracked(experiment="fraud-detection")
    def train():
        DataParallelTrainer(
            train_loop,
            train_loop_config={"epochs": 3},
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(worker_runtime_env=mm_ray.runtime_env()),
        ).fit()

The run's status stays the driver's: workers never end it.

Needs the ``ray`` extra: ``pip install 'michelangelo-mlflow[ray]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from michelangelo_mlflow.exceptions import ConfigurationError, MissingDependencyError

try:
    import ray  # noqa: F401  -- fail here, naming the extra, rather than in a worker
except ImportError as _exc:
    raise MissingDependencyError("michelangelo_mlflow.ray", "michelangelo-mlflow[ray]") from _exc

from michelangelo_mlflow._worker import (
    CONTEXT_VARIABLE,
    SPOOL_DIR_VARIABLE,
    WorkerRun,
    worker_environment,
    worker_run,
)

__all__ = ["WorkerRun", "runtime_env", "worker_run"]


def runtime_env(
    base: Mapping[str, Any] | None = None, *, credentials: bool = True
) -> dict[str, Any]:
    """A Ray runtime env that attaches workers to the open tracked run.

    Call it in the driver, inside the tracked run, and pass the result wherever Ray
    takes a runtime env; every task and actor started with it (and their children,
    which inherit it) can call :func:`worker_run`:

    - Ray Train V2: ``RunConfig(worker_runtime_env=runtime_env())``; Ray Train adds
      its own variables to these ``env_vars`` for every training worker.
    - Tasks and actors: ``task.options(runtime_env=runtime_env())``,
      ``Actor.options(runtime_env=runtime_env())`` or ``@ray.remote(runtime_env=...)``
      on a function defined inside the run.
    - The whole job: ``ray.init(runtime_env=runtime_env())``, when the run is open
      before Ray is initialized.

    ``env_vars`` holds MLflow's variables for the run's settings (tracking URI,
    credentials, TLS, HTTP retry budget), ``MICHELANGELO_MLFLOW_WORKER_CONTEXT`` and
    the driver's spool directory as ``MICHELANGELO_MLFLOW_SPOOL_DIR`` (an absolute
    path: workers on the driver's node spool beside it, so that the driver's block
    end waits for their records; set it in ``base`` for workers on other nodes).
    Ray keeps runtime envs in its task and actor specs, shows them in the dashboard
    and, in Ray 2.60, writes them to ``runtime_env_agent.log`` on each node: when the
    worker pods already hold the credentials (a Kubernetes Secret), pass
    ``credentials=False`` so none are sent. Never print or log the result.

    Args:
        base: A runtime env to extend (``pip``, ``working_dir``, ``env_vars`` …); it
            is copied, not changed. Its ``env_vars`` are kept.
        credentials: Send the credentials (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``,
            ``MLFLOW_TRACKING_TOKEN``, ``DATABRICKS_TOKEN``) to the workers.

    Returns:
        A new runtime env dict.

    Raises:
        ConfigurationError: When no tracked run is open, or ``base`` already sets one
            of these variables to another value (such as another run's context).

    Example:
        >>> @mm.tracked(experiment="fraud-detection")  # doctest: +SKIP
        ... def score_shards(shards):
        ...     task = score.options(runtime_env=mm_ray.runtime_env({"pip": ["xgboost"]}))
        ...     return ray.get([task.remote(shard) for shard in shards])
    """
    environment = worker_environment(credentials=credentials)
    result = dict(base or {})
    given = result.get("env_vars") or {}
    if not isinstance(given, Mapping):
        raise ConfigurationError(
            f"runtime_env base has env_vars of type {type(given).__name__}, not a mapping",
            variable="base",
            fix='pass env_vars as a dict of strings, as Ray expects: {"env_vars": {"K": "v"}}',
        )
    if SPOOL_DIR_VARIABLE in given:  # the base's spool directory wins (another node's path)
        environment[SPOOL_DIR_VARIABLE] = given[SPOOL_DIR_VARIABLE]
    clash = sorted(name for name, value in environment.items() if given.get(name, value) != value)
    if clash:
        what = "another run's context" if CONTEXT_VARIABLE in clash else "other values"
        raise ConfigurationError(
            f"runtime_env base sets {', '.join(clash)} to {what} than the open tracked run",
            variable="base",
            fix="remove these variables from the base runtime env, and call runtime_env() "
            "again in each tracked run",
        )
    result["env_vars"] = {**given, **environment}
    return result
