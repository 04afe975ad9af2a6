"""Attach worker processes to the driver's tracked run, without ending it.

The driver side builds the environment a worker needs (:func:`worker_environment`):
MLflow's own variables for the driver's configuration, credentials included, plus
``MICHELANGELO_MLFLOW_WORKER_CONTEXT``, a small JSON :class:`WorkerContext` naming the
run (run id, experiment id, tracking URI without credentials; never a secret).
:mod:`michelangelo_mlflow.ray` hands it to Ray as a runtime env.

The worker side, :func:`worker_run`, reads that context through :class:`Settings` and
yields a :class:`WorkerRun` handle. Only the logging ranks (world rank 0 by default;
every rank with ``per_worker=True``) point MLflow at the server and open the run's
spool in the worker (so their records, and plain ``mlflow`` calls for the run, take
the same outage-proof path as the driver's); the others get a handle whose calls
return at once. The worker never ends the run: the driver owns its status.

This module does not import Ray, so ``michelangelo_mlflow.worker_run`` is importable
without the ``ray`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from michelangelo_mlflow._errors import translate
from michelangelo_mlflow._logging.courier import RunSpool, open_run
from michelangelo_mlflow._logging.opening import (
    deliver_rest,
    route_for,
    spool_directory,
    spool_terms,
    take_attached,
)
from michelangelo_mlflow._logging.store import routing_to
from michelangelo_mlflow._params import ParamTagWriter
from michelangelo_mlflow._run import RunState, current_run
from michelangelo_mlflow._scope import mlflow_environment, mlflow_scope
from michelangelo_mlflow._settings import (
    CONTEXT_VARIABLE,
    FIX_PROPAGATE,
    Settings,
    WorkerContext,
    variables_of,
)
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow.exceptions import ConfigurationError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "CONTEXT_VARIABLE",
    "CREDENTIAL_VARIABLES",
    "SPOOL_DIR_VARIABLE",
    "WorkerContext",
    "WorkerRun",
    "worker_environment",
    "worker_run",
]

log = logging.getLogger("michelangelo_mlflow.ray")

SPOOL_DIR_VARIABLE = variables_of("spool_dir")[0]
"""The driver's spool directory, which a worker on its node shares (a base may override it)."""

CREDENTIAL_VARIABLES = frozenset(
    var
    for field in ("tracking_username", "tracking_password", "tracking_token", "databricks_token")
    for var in variables_of(field)
)
"""The variables left out by ``worker_environment(credentials=False)``."""

_KNOBS = (
    "http_max_retries",
    "http_backoff_factor",
    "http_timeout",
    "spool",
    "spool_grace",
    "spool_max_bytes",
    "flush_interval",
    "senders",
    "allow_local_store",
)
"""This SDK's settings a worker inherits from the driver (when set)."""


def worker_environment(*, credentials: bool = True) -> dict[str, str]:
    """The environment that attaches a worker to the innermost open tracked run.

    It holds MLflow's variables for the run's settings (tracking and registry URI,
    TLS, HTTP retry budget and, unless ``credentials=False``, the credentials), this
    SDK's HTTP knobs, and :data:`CONTEXT_VARIABLE`. Hand it to the worker the way
    your scheduler passes environment; never log it.

    Args:
        credentials: Include ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN`` and
            ``DATABRICKS_TOKEN``. Turn off when the workers already hold credentials
            (for example from a Kubernetes Secret on the Ray worker pods).

    Returns:
        Variable name to value; secrets included unless ``credentials=False``.

    Raises:
        ConfigurationError: When no tracked run is open in this thread.

    Example:
        >>> with mm.tracking_run("fraud-detection"):  # doctest: +SKIP
        ...     env = worker_environment()
    """
    run = current_run()
    if run is None or run.active_run is None:
        raise ConfigurationError(
            "no tracked run is open here, so there is no run to propagate to workers",
            variable="runtime_env",
            fix="call it inside the driver's @mm.tracked function or `with mm.tracking_run()` "
            "block, where the run is open",
        )
    run.workers_may_nest = True  # workers may open children of it (Ray's setup_mlflow)
    settings = run.settings
    info = run.active_run.info
    context = WorkerContext(info.run_id, str(info.experiment_id), settings.safe_tracking_uri)
    environment = {
        name: value
        for name, value in mlflow_environment(settings).items()
        if value is not None and (credentials or name not in CREDENTIAL_VARIABLES)
    }
    if not credentials:  # a database URI may carry its own user:password@
        environment["MLFLOW_TRACKING_URI"] = settings.safe_tracking_uri
    if settings.registry_uri is not None:
        environment[variables_of("registry_uri")[0]] = settings.registry_uri
    if run.directory is not None:  # a worker on this node spools beside the driver
        environment[SPOOL_DIR_VARIABLE] = str(run.directory.absolute())
    for knob in _KNOBS:
        value = getattr(settings, knob)
        if value is not None:
            environment[variables_of(knob)[0]] = str(
                int(value) if knob == "spool_max_bytes" else value
            )
    environment[CONTEXT_VARIABLE] = context.to_json()
    return environment


class WorkerRun:
    """A worker's handle on the driver's run; create it with :func:`worker_run`.

    On a logging rank its calls go to the tracking server; on the others they return
    at once, without network or MLflow client. It can be entered once, and its
    methods work only inside the ``with`` block.

    Attributes:
        run_id: The driver's run.
        experiment_id: The run's experiment.
        rank: This worker's world rank (see :func:`worker_run`).
        per_worker: Whether every rank logs, with the rank in the metric key.
        logging: Whether this worker's calls are sent (rank 0, or ``per_worker``).

    Example:
        >>> with worker_run(per_worker=True) as run:  # doctest: +SKIP
        ...     run.log_metric("loss", 0.42, step=3)  # "loss/rank1" on world rank 1
        ...     run
        WorkerRun(run_id='4f2a…', rank=1, logging=True)
    """

    def __init__(self, *, per_worker: bool, rank: int | None) -> None:
        if rank is not None and (isinstance(rank, bool) or rank < 0):
            raise ConfigurationError(
                f"rank={rank!r} is not a world rank",
                variable="rank",
                fix="pass a non-negative int, or leave it out to use Ray Train's world rank",
            )
        self.settings = Settings()
        if self.settings.worker_context is None:
            raise ConfigurationError(
                f"{CONTEXT_VARIABLE} is not set in this process, so there is no driver run "
                "to attach to",
                variable=CONTEXT_VARIABLE,
                fix=FIX_PROPAGATE,
            )
        context = WorkerContext.from_json(self.settings.worker_context)
        if context.tracking_uri != self.settings.safe_tracking_uri:
            raise ConfigurationError(
                f"the driver's run {context.run_id} is on {context.tracking_uri}, but this "
                f"worker's MLFLOW_TRACKING_URI is {self.settings.safe_tracking_uri}",
                variable="MLFLOW_TRACKING_URI",
                fix="do not override MLFLOW_TRACKING_URI in the worker's runtime env; "
                + FIX_PROPAGATE,
            )
        self.run_id = context.run_id
        self.experiment_id = context.experiment_id
        self.rank = _world_rank() if rank is None else rank
        self.per_worker = per_worker
        self.logging = per_worker or self.rank == 0
        self._state = RunState.NEW
        self._stack = contextlib.ExitStack()
        self._client: MlflowClient | None = None
        self._writer: ParamTagWriter | None = None
        self._spool: RunSpool | None = None

    def __repr__(self) -> str:
        return f"WorkerRun(run_id={self.run_id!r}, rank={self.rank}, logging={self.logging})"

    def __enter__(self) -> WorkerRun:
        self._state = RunState.enter(self._state, "worker_run")
        if not self.logging:
            return self
        try:
            self._attach()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()  # never ends the run: the driver owns its status

    def metric_key(self, key: str) -> str:
        """The key under which this handle logs metric ``key``.

        Example:
            >>> with worker_run(per_worker=True) as run:  # doctest: +SKIP
            ...     run.metric_key("loss")  # on world rank 1
            'loss/rank1'
        """
        return f"{key}/rank{self.rank}" if self.per_worker else key

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Log one metric value (under :meth:`metric_key`) on a logging rank.

        Args:
            key: The metric's name.
            value: Its value.
            step: The training step; default 0, as in MLflow.

        Example:
            >>> with worker_run() as run:  # doctest: +SKIP
            ...     run.log_metric("loss", 0.42, step=3)
        """
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several metric values in one request on a logging rank.

        Args:
            metrics: Metric name to value.
            step: The training step of all of them; default 0, as in MLflow.

        Raises:
            TrackingError: When MLflow rejects them (translated, chained).

        Example:
            >>> with worker_run() as run:  # doctest: +SKIP
            ...     run.log_metrics({"loss": 0.42, "accuracy": 0.9}, step=3)
        """
        client = self._sending()
        if client is None:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = [
            Metric(self.metric_key(key), float(value), timestamp, step or 0)
            for key, value in metrics.items()
        ]
        with translate(self.settings.safe_tracking_uri, run_id=self.run_id):
            client.log_batch(self.run_id, metrics=entries)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params on a logging rank: flattened, redacted and bounded like the driver's.

        Params are not suffixed with the rank: with ``per_worker=True`` every rank
        must log the same value for a key (MLflow params cannot change).

        Raises:
            ConfigurationError: When a param already has another value.

        Example:
            >>> with worker_run() as run:  # doctest: +SKIP
            ...     run.log_params({"optimizer": {"lr": 0.1}})  # logs optimizer.lr
        """
        if self._sending() is None:
            return
        assert self._writer is not None
        with translate(self.settings.safe_tracking_uri, run_id=self.run_id):
            self._writer.log_params(params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on a logging rank: flattened, redacted and bounded like the driver's.

        Tags are not suffixed with the rank: with ``per_worker=True`` the last rank
        to set a key wins.

        Example:
            >>> with worker_run() as run:  # doctest: +SKIP
            ...     run.set_tags({"data.shard": "2024-06"})
        """
        if self._sending() is None:
            return
        assert self._writer is not None
        with translate(self.settings.safe_tracking_uri, run_id=self.run_id):
            self._writer.set_tags(tags)

    def _sending(self) -> MlflowClient | None:
        if self._state is not RunState.OPEN:
            raise RuntimeError(
                f"this worker_run is {self._state.value}: log inside its `with` block"
            )
        return self._client

    def _attach(self) -> None:
        from mlflow.tracking import MlflowClient

        settings = self.settings
        directory = spool_directory(settings)
        self._stack.enter_context(mlflow_scope(settings))
        route = route_for(settings) if directory is not None else None
        self._stack.enter_context(routing_to(route))
        uri = settings.safe_tracking_uri
        client = MlflowClient(settings.effective_tracking_uri)
        with translate(uri, run_id=self.run_id):
            run = client.get_run(self.run_id)
        if run.info.status != "RUNNING":
            raise ConfigurationError(
                f"the driver's run {self.run_id} on {uri} is {run.info.status}, not RUNNING: "
                "the worker's runtime env was built for a run that has ended",
                variable=CONTEXT_VARIABLE,
                fix="build the runtime env inside each tracked run, where the workers are "
                "started: " + FIX_PROPAGATE,
            )
        self._spool = take_attached(self.run_id)  # opened by a write before this block
        if directory is not None and route is not None and self.run_id not in STATE.spools:
            self._spool = open_run(
                directory,
                route,
                self.run_id,
                run.info.experiment_id,
                run=run,
                role="worker",
                **spool_terms(settings),
            )
        self._client = client
        self._writer = ParamTagWriter(client, self.run_id, settings.secret_values())

    def _close(self) -> None:
        self._state = RunState.CLOSED
        self._client = None
        self._writer = None
        try:
            if self._spool is not None:
                self._deliver_rest(self._spool)
        finally:
            self._spool = None
            self._stack.close()

    def _deliver_rest(self, spool: RunSpool) -> None:
        deliver_rest(spool, self.settings, f"rank {self.rank}")


def worker_run(*, per_worker: bool = False, rank: int | None = None) -> WorkerRun:
    """Attach this worker to the driver's tracked run, for logging from a Ray worker.

    The driver's run reaches the worker through its environment (see
    :func:`michelangelo_mlflow.ray.runtime_env`). By default only world rank 0 logs;
    on every other rank the handle's calls do nothing and cost nothing (no network,
    no MLflow client). With ``per_worker=True`` every rank logs into the same run,
    each metric under ``<key>/rank<world rank>`` (``loss/rank1``); params and tags
    keep their keys. Leaving the block never ends the run, and an exception passes
    through unchanged: the driver decides whether the run is FINISHED or FAILED.

    The world rank is Ray Train's (``ray.train.get_context().get_world_rank()``)
    inside a Ray Train training function, and 0 in plain Ray tasks and actors (all
    of which therefore log by default). Pass ``rank=`` to number tasks or actors
    yourself.

    Args:
        per_worker: Log from every rank, with the rank in the metric key.
        rank: This worker's rank; default: detected as described above.

    Returns:
        A context manager that yields the :class:`WorkerRun` handle.

    Raises:
        ConfigurationError: When the process carries no driver run (the runtime env
            was not passed), the context is malformed, the worker's tracking URI is
            not the driver's, or (on entering, on a logging rank) the run has ended.
        PreflightError: When the tracking server rejects the worker's credentials, or
            (with the spool off) cannot be reached, on entering, on a logging rank.
            With the spool on, a server that does not answer is an outage: the block
            is entered and its records wait in the worker's spool.

    Example:
        >>> def train_loop(config):  # doctest: +SKIP
        ...     with mm.worker_run() as run:
        ...         for epoch in range(config["epochs"]):
        ...             run.log_metric("loss", train_one_epoch(), step=epoch)
    """
    return WorkerRun(per_worker=per_worker, rank=rank)


def _world_rank() -> int:
    train = sys.modules.get("ray.train")
    if train is None:  # a Ray Train worker has imported it; nothing else needs it here
        return 0
    try:
        rank = train.get_context().get_world_rank()
    except (RuntimeError, DeprecationWarning):  # not in a training function
        return 0
    return int(rank) if rank is not None else 0
