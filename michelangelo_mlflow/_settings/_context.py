"""The driver's run as Ray workers receive it: one small JSON in one variable.

``michelangelo_mlflow.ray.runtime_env()`` writes it for the workers; ``worker_run()``
and a worker's first write to the driver's run (the store plugins) read it.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import ClassVar

from michelangelo_mlflow._settings._model import variables_of
from michelangelo_mlflow.exceptions import ConfigurationError

__all__ = ["CONTEXT_VARIABLE", "FIX_PROPAGATE", "WorkerContext", "context_text", "driver_run_id"]

CONTEXT_VARIABLE = variables_of("worker_context")[0]
"""The environment variable that carries the :class:`WorkerContext` to workers."""

FIX_PROPAGATE = (
    "inside the driver's tracked run, pass michelangelo_mlflow.ray.runtime_env() to Ray: "
    "RunConfig(worker_runtime_env=...) for Ray Train, task.options(runtime_env=...) or "
    "@ray.remote(runtime_env=...) for tasks and actors"
)


@dataclass(frozen=True)
class WorkerContext:
    """The driver's run, as workers receive it; holds no secret.

    Attributes:
        run_id: The driver's run.
        experiment_id: The run's experiment.
        tracking_uri: The tracking URI without credentials, query or fragment.

    Example:
        >>> context = WorkerContext("4f2a", "7", "http://mlflow.example.com:5000")
        >>> WorkerContext.from_json(context.to_json()) == context
        True
    """

    run_id: str
    experiment_id: str
    tracking_uri: str

    VERSION: ClassVar[int] = 1

    def to_json(self) -> str:
        """The context as the compact JSON that workers read."""
        return json.dumps(
            {
                "version": self.VERSION,
                "run_id": self.run_id,
                "experiment_id": self.experiment_id,
                "tracking_uri": self.tracking_uri,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerContext:
        """Parse a context written by :meth:`to_json`.

        Raises:
            ConfigurationError: When ``text`` is not such a context.
        """
        try:
            data = json.loads(text)
            if data["version"] != cls.VERSION:
                raise ValueError(f"version {data['version']!r} is not {cls.VERSION}")
            context = cls(
                str(data["run_id"]), str(data["experiment_id"]), str(data["tracking_uri"])
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(
                f"{CONTEXT_VARIABLE} is not a worker context written by this version of "
                f"michelangelo-mlflow ({type(exc).__name__}: {exc})",
                variable=CONTEXT_VARIABLE,
                fix="do not set it by hand; install the same michelangelo-mlflow version on "
                f"the driver and the workers, and {FIX_PROPAGATE}",
            ) from None
        return context


def context_text() -> str:
    """This process's worker context as given (``""`` without one); cheap, never raising.

    Example:
        >>> context_text()  # not a Ray worker started with runtime_env()
        ''
    """
    return os.environ.get(CONTEXT_VARIABLE, "")


def driver_run_id() -> str | None:
    """The driver's run a worker was started for (its runtime env's worker context), if any.

    Cheaper than :class:`WorkerContext.from_json` and never raising: the store plugins
    ask it for every write to a run this process holds no spool for.

    Example:
        >>> driver_run_id() is None  # no worker context in this process
        True
    """
    return _run_id_in(context_text())


@functools.lru_cache(maxsize=4)
def _run_id_in(text: str) -> str | None:
    if not text:
        return None
    try:
        run_id = json.loads(text).get("run_id")
    except (ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) and run_id else None
