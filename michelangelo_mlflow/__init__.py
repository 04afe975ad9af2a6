"""Track experiments in MLflow and register models from Michelangelo tasks, done right.

The public API is re-exported here and imported on first use, so ``import
michelangelo_mlflow`` stays cheap (MLflow loads this package to find its tracking-store
plugin, and ``michelangelo-mlflow --help`` must not wait for MLflow or pydantic).

Example:
    >>> import michelangelo_mlflow as mm
    >>> with mm.tracking_run(experiment="fraud-detection", run_name="eda") as run:  # doctest: +SKIP
    ...     mlflow.log_metric("rows", 1_000)

In a notebook, a run that spans cells (``%load_ext michelangelo_mlflow`` adds the
``%%tracked`` and ``%mm_run`` magics):

    >>> run = mm.start_run(experiment="fraud-detection", autolog="sklearn")  # doctest: +SKIP
    >>> run.end()  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module as _import_module
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from michelangelo_mlflow import exceptions

if TYPE_CHECKING:
    from michelangelo_mlflow._extension import load_ipython_extension
    from michelangelo_mlflow._notebook import NotebookRun, start_run
    from michelangelo_mlflow._preflight import CheckResult, PreflightReport, preflight
    from michelangelo_mlflow._registry import MichelangeloModelRef, Registration, register_model
    from michelangelo_mlflow._run import RunOptions, TrackingRun, next_step, tracking_run
    from michelangelo_mlflow._settings import Settings, SettingSource
    from michelangelo_mlflow._tracked import tracked
    from michelangelo_mlflow._worker import WorkerRun, worker_run

__version__ = _version("michelangelo-mlflow")

__all__ = [
    "CheckResult",
    "MichelangeloModelRef",
    "NotebookRun",
    "PreflightReport",
    "Registration",
    "RunOptions",
    "SettingSource",
    "Settings",
    "TrackingRun",
    "WorkerRun",
    "__version__",
    "exceptions",
    "load_ipython_extension",
    "next_step",
    "preflight",
    "register_model",
    "start_run",
    "tracked",
    "tracking_run",
    "worker_run",
]

_HOMES = {
    "NotebookRun": "_notebook",
    "load_ipython_extension": "_extension",
    "start_run": "_notebook",
    "CheckResult": "_preflight",
    "PreflightReport": "_preflight",
    "preflight": "_preflight",
    "MichelangeloModelRef": "_registry",
    "Registration": "_registry",
    "register_model": "_registry",
    "RunOptions": "_run",
    "TrackingRun": "_run",
    "next_step": "_run",
    "tracking_run": "_run",
    "Settings": "_settings",
    "SettingSource": "_settings",
    "tracked": "_tracked",
    "WorkerRun": "_worker",
    "worker_run": "_worker",
}
"""Where each public name lives; imported on first access."""


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'michelangelo_mlflow' has no attribute {name!r}")
    value = getattr(_import_module(f"michelangelo_mlflow.{home}"), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
