"""Track experiments in MLflow and register models from Michelangelo tasks, done right.

Example:
    >>> import michelangelo_mlflow as mm
    >>> with mm.tracking_run(experiment="fraud-detection", run_name="eda") as run:  # doctest: +SKIP
    ...     mlflow.log_metric("rows", 1_000)
"""

from __future__ import annotations

from importlib.metadata import version as _version

from michelangelo_mlflow import exceptions
from michelangelo_mlflow._preflight import CheckResult, PreflightReport, preflight
from michelangelo_mlflow._registry import MichelangeloModelRef, Registration, register_model
from michelangelo_mlflow._run import TrackingRun, next_step, tracking_run
from michelangelo_mlflow._settings import Settings, SettingSource
from michelangelo_mlflow._tracked import tracked
from michelangelo_mlflow._worker import WorkerRun, worker_run

__version__ = _version("michelangelo-mlflow")

__all__ = [
    "CheckResult",
    "MichelangeloModelRef",
    "PreflightReport",
    "Registration",
    "SettingSource",
    "Settings",
    "TrackingRun",
    "WorkerRun",
    "__version__",
    "exceptions",
    "next_step",
    "preflight",
    "register_model",
    "tracked",
    "tracking_run",
    "worker_run",
]
