"""The tracked run: ``tracking_run`` and ``@tracked``.

A tracked run points MLflow at the configured server for its duration (and puts
MLflow's globals back afterwards), checks the server before the first run, creates or
explicitly resumes the run with provenance tags, and always ends it with the status
that matches what happened: FINISHED, FAILED (with the error recorded) or KILLED.
It never leaves a run RUNNING and never resumes an inherited ``MLFLOW_RUN_ID``.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import enum
import functools
import inspect
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from michelangelo_mlflow import _params, _pipeline, _provenance
from michelangelo_mlflow._errors import from_foreign, translate
from michelangelo_mlflow._preflight import ensure_preflight
from michelangelo_mlflow._scope import mlflow_scope, set_active_experiment
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._signals import Terminated, on_sigterm
from michelangelo_mlflow.exceptions import ConfigurationError, TrackingError

if TYPE_CHECKING:
    from mlflow import ActiveRun
    from mlflow.entities import Experiment
    from mlflow.tracking import MlflowClient

__all__ = [
    "RunLogger",
    "RunState",
    "TrackingRun",
    "chunks",
    "current_run",
    "current_settings",
    "next_step",
    "tracked",
    "tracking_run",
]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("michelangelo_mlflow")

_experiment_ids: dict[tuple[str, str | None], str] = {}
"""Experiment ids by (tracking URI, name or id), resolved once per process."""

_current: contextvars.ContextVar[TrackingRun | None] = contextvars.ContextVar(
    "michelangelo_mlflow_current_run", default=None
)


def current_run() -> TrackingRun | None:
    """The innermost open tracked run in this context, if any."""
    return _current.get()


def current_settings() -> Settings | None:
    """The settings of the innermost open tracked run, if any."""
    run = _current.get()
    return run.settings if run is not None else None


class RunState(enum.Enum):
    """Lifecycle of a :class:`TrackingRun`."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class RunLogger:
    """The one place through which this SDK logs params and tags to a run.

    Values are flattened, redacted and bounded by :func:`_params.prepare`, then sent
    with ``log_batch`` in chunks of MLflow's batch limit.

    Args:
        client: The MLflow client of the run's tracking server.
        run_id: The run.
        secrets: Secret values to redact wherever they occur.
    """

    _BATCH = 100  # MLflow's limit of params and tags per log_batch

    def __init__(self, client: MlflowClient, run_id: str, secrets: tuple[str, ...]) -> None:
        self.client = client
        self.run_id = run_id
        self.secrets = secrets

    def log_params(
        self, values: Mapping[str, Any], *, existing: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Log params; values already logged with the same value are skipped.

        Args:
            values: The params, possibly nested.
            existing: The run's params as just read from the server, when the caller
                has them (saves a round trip); by default they are read.

        Returns:
            The params as logged (flattened, redacted, bounded).

        Raises:
            ConfigurationError: When a param already has a different value (MLflow
                params are immutable).
        """
        from mlflow.entities import Param

        prepared = _params.prepare(values, kind="param", secrets=self.secrets)
        if existing is None:
            existing = self.client.get_run(self.run_id).data.params if prepared else {}
        changed = sorted(k for k, v in prepared.items() if k in existing and existing[k] != v)
        if changed:
            raise ConfigurationError(
                f"run {self.run_id} already has params {', '.join(changed)} with other "
                "values, and MLflow params cannot change",
                variable=changed[0],
                fix="log the new values under other keys, or start a new run",
            )
        new = [Param(k, v) for k, v in prepared.items() if k not in existing]
        for chunk in chunks(new, self._BATCH):
            self.client.log_batch(self.run_id, params=chunk, synchronous=True)
        return prepared

    def set_tags(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Set tags (flattened, redacted, bounded).

        Returns:
            The tags as set.
        """
        from mlflow.entities import RunTag

        prepared = _params.prepare(values, kind="tag", secrets=self.secrets)
        tags = [RunTag(k, v) for k, v in prepared.items()]
        for chunk in chunks(tags, self._BATCH):
            self.client.log_batch(self.run_id, tags=chunk, synchronous=True)
        return prepared


class TrackingRun:
    """A context manager around one MLflow run; create it with :func:`tracking_run`.

    Entering yields MLflow's ``ActiveRun``, so plain ``mlflow.log_*`` calls inside
    the block land in the run. It can be entered once.
    """

    def __init__(
        self,
        experiment: str | None,
        run_name: str | None,
        *,
        tags: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        description: str | None,
        nested: bool,
        run_id: str | None,
        settings: Settings | None,
        key: str | None = None,
        task: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.params = dict(params or {})
        self.description = description
        self.nested = nested
        self.run_id = run_id
        self.task = task
        self.key = key
        self.parent_run_id: str | None = None
        self.settings = settings or current_settings() or Settings()
        self.state = RunState.NEW
        self.active_run: ActiveRun | None = None
        self.logger: RunLogger | None = None
        self._mlflow_client: MlflowClient | None = None
        self._stack = contextlib.ExitStack()
        self._token: contextvars.Token[TrackingRun | None] | None = None

    def __enter__(self) -> ActiveRun:
        if self.state is not RunState.NEW:
            raise RuntimeError(
                f"this tracking_run is {self.state.value}: a tracking_run can be entered "
                "once; call tracking_run(...) again for another run"
            )
        # Invalid params fail here, before any call to the server creates a run.
        params = _params.prepare(self.params, kind="param", secrets=self.settings.secret_values())
        self.state = RunState.OPEN
        uri = self.settings.safe_tracking_uri
        self._stack.enter_context(mlflow_scope(self.settings))
        try:
            ensure_preflight(self.settings)
            with translate(uri, run_id=self.run_id):
                try:
                    self.active_run = self._start()
                except Exception:
                    _experiment_ids.clear()  # the experiment may have been deleted meanwhile
                    raise
            set_active_experiment(self.active_run.info.experiment_id)
            self._token = _current.set(self)
            self._stack.enter_context(on_sigterm(self._close))
            self.logger = RunLogger(
                self._client(), self.active_run.info.run_id, self.settings.secret_values()
            )
            with translate(uri, run_id=self.active_run.info.run_id):
                if params:  # start_run returned the run as stored: its params are fresh
                    self.logger.log_params(params, existing=self.active_run.data.params)
        except BaseException as exc:
            self._close(exc)
            raise
        return self.active_run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(exc)
        if exc is not None and isinstance(exc, Exception):
            ours = from_foreign(
                exc, tracking_uri=self.settings.safe_tracking_uri, run_id=self._run_id
            )
            if ours is not None:
                raise ours from exc

    @property
    def _run_id(self) -> str | None:
        return self.active_run.info.run_id if self.active_run else self.run_id

    def _client(self) -> MlflowClient:
        if self._mlflow_client is None:
            from mlflow.tracking import MlflowClient

            self._mlflow_client = MlflowClient()  # inside the scope: the run's server
        return self._mlflow_client

    def _start(self) -> ActiveRun:
        import mlflow

        active = mlflow.active_run()
        if active is not None and not self.nested:
            raise ConfigurationError(
                f"MLflow run {active.info.run_id} is already active in this thread",
                variable="nested",
                fix="pass nested=True to nest this run under it, or end it first "
                "(mlflow.end_run())",
            )
        tags = {
            # MLflow may fill mlflow.user from MLFLOW_TRACKING_USERNAME, a credential:
            # record the OS user instead unless the caller names one.
            "mlflow.user": _provenance.os_user(),
            **self.tags,
            **_provenance.provenance_tags(self.settings, task=self.task),
        }
        if self.run_id is not None:
            self._check_resumable(self.run_id)
            return mlflow.start_run(
                run_id=self.run_id,
                run_name=self.run_name,
                nested=self.nested,
                tags=self._prepared(tags),
                description=self.description,
            )
        experiment_id = self._experiment_id()
        key = _pipeline.task_key(self.settings, task=self.key or self.task, run_name=self.run_name)
        if key is not None:
            attempt = _pipeline.find_attempt(self._client(), experiment_id, key, self.settings)
            tags.update(attempt.tags())
            if attempt.resume and attempt.previous is not None:
                return mlflow.start_run(
                    run_id=attempt.previous.info.run_id,
                    nested=self.nested,
                    tags=self._prepared(tags),
                )
        if self.settings.pipeline_run == "nested" and active is None and key is not None:
            self.parent_run_id = _pipeline.pipeline_parent(
                self._client(), experiment_id, self.settings
            )
            tags["mlflow.parentRunId"] = self.parent_run_id
        return mlflow.start_run(
            experiment_id=experiment_id,
            run_name=self.run_name,
            nested=self.nested,
            tags=self._prepared(tags),
            description=self.description,
        )

    def _check_resumable(self, run_id: str) -> None:
        from mlflow.exceptions import MlflowException

        uri = self.settings.safe_tracking_uri
        try:
            run = self._client().get_run(run_id)
        except MlflowException as exc:
            if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                raise
            raise ConfigurationError(
                f"cannot resume MLflow run {run_id!r}: there is no such run on {uri}",
                variable="run_id",
                fix="check the run id; a run can only be resumed on the tracking server "
                "it was created on",
            ) from exc
        if run.info.lifecycle_stage == "deleted":
            raise ConfigurationError(
                f"cannot resume MLflow run {run_id!r} on {uri}: it is deleted",
                variable="run_id",
                fix="restore it (mlflow runs restore --run-id ...) or start a new run",
            )

    def _prepared(self, tags: dict[str, Any]) -> dict[str, str]:
        return _params.prepare(tags, kind="tag", secrets=self.settings.secret_values())

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.experiment or self.settings.experiment_name
        cache_key = (self.settings.effective_tracking_uri, name or self.settings.experiment_id)
        if cache_key in _experiment_ids:
            return _experiment_ids[cache_key]
        client = self._client()
        experiment: Experiment | None
        if name is None and self.settings.experiment_id is not None:
            try:
                experiment = client.get_experiment(self.settings.experiment_id)
            except MlflowException as exc:
                if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                    raise
                raise ConfigurationError(
                    f"MLFLOW_EXPERIMENT_ID={self.settings.experiment_id} names no experiment "
                    f"on {self.settings.safe_tracking_uri}",
                    variable="MLFLOW_EXPERIMENT_ID",
                    fix="set it to an existing experiment's id, or set MLFLOW_EXPERIMENT_NAME "
                    "instead (a missing experiment is created by name)",
                ) from exc
        else:
            name = name or self.settings.default_experiment
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    created = str(client.create_experiment(name))
                    _experiment_ids[cache_key] = created
                    return created
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    experiment = client.get_experiment_by_name(name)  # created concurrently
        if experiment is None or experiment.lifecycle_stage == "deleted":
            raise ConfigurationError(
                f"MLflow experiment {name or self.settings.experiment_id!r} on "
                f"{self.settings.safe_tracking_uri} is deleted",
                variable="experiment",
                fix="restore it (mlflow experiments restore) or use another experiment name",
            )
        _experiment_ids[cache_key] = str(experiment.experiment_id)
        return _experiment_ids[cache_key]

    def _close(self, exc: BaseException | None) -> None:
        if self.state is RunState.CLOSED:
            return
        self.state = RunState.CLOSED
        try:
            if self.active_run is not None:
                self._end(exc)
        finally:
            if self._token is not None:
                _current.reset(self._token)
            self._stack.close()

    def _end(self, exc: BaseException | None) -> None:
        import mlflow

        assert self.active_run is not None
        run_id = self.active_run.info.run_id
        status = _status_for(exc)
        try:
            with translate(self.settings.safe_tracking_uri, run_id=run_id):
                if exc is not None and self.logger is not None:
                    self.logger.set_tags(
                        _provenance.error_tags(exc, secrets=self.settings.secret_values())
                    )
                ended_ours = False
                while (active := mlflow.active_run()) is not None and not ended_ours:
                    ended_ours = active.info.run_id == run_id
                    mlflow.end_run(status)  # also ends runs the body left open inside ours
                if not ended_ours:  # the body ended our run itself; record what happened
                    self._client().set_terminated(run_id, status)
                if self.parent_run_id is not None:
                    self._converge_on_parent(run_id, status)
        except TrackingError:
            if exc is None:
                raise
            log.warning(
                "could not mark MLflow run %s %s on %s; the original error follows",
                run_id,
                status,
                self.settings.safe_tracking_uri,
                exc_info=True,
            )

    def _converge_on_parent(self, run_id: str, status: str) -> None:
        assert self.parent_run_id is not None
        client = self._client()
        experiment_id = self.active_run.info.experiment_id if self.active_run else ""
        try:
            parent = _pipeline.reconcile(client, experiment_id, self.settings)
        except LookupError:
            return
        if parent != self.parent_run_id:
            client.set_tag(run_id, "mlflow.parentRunId", parent)
            self.parent_run_id = parent
        if status != "FINISHED":
            _pipeline.mark_parent_failed(client, parent)


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, KeyboardInterrupt | Terminated):
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "FINISHED"
    return "FAILED"


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    """``items`` in consecutive lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def tracking_run(
    experiment: str | None = None,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    description: str | None = None,
    nested: bool = False,
    run_id: str | None = None,
    settings: Settings | None = None,
    key: str | None = None,
) -> TrackingRun:
    """Open an MLflow run on the configured tracking server, and end it correctly.

    Inside the block, plain ``mlflow.log_*`` calls land in the run. On exit the run
    is FINISHED; if the block raises, it is FAILED (with the exception's type and
    redacted message as ``michelangelo.error.*`` tags) and the exception propagates
    (MLflow and ``requests`` errors as this SDK's typed errors, chained); on
    ``KeyboardInterrupt`` it is KILLED. MLflow's globals (tracking URI, registry URI,
    credentials, HTTP retry budget) are set for the block and restored afterwards.

    Args:
        experiment: Experiment name; default ``MLFLOW_EXPERIMENT_NAME`` or
            ``MLFLOW_EXPERIMENT_ID``, then ``"Default"``. Created when missing.
        run_name: The run's name; MLflow generates one when omitted.
        tags: Tags to set (nested mappings flattened with dots; secrets redacted).
        params: Params to log (nested mappings flattened with dots; secret-looking
            keys redacted; values over 6,000 characters cut with a warning).
        description: The run's description (``mlflow.note.content``).
        nested: Nest under the run already active in this thread.
        run_id: Resume this run instead of creating one. An inherited
            ``MLFLOW_RUN_ID`` is never resumed silently: pass it here to resume it.
        settings: Configuration; default: the enclosing tracked run's, else read
            from the environment.
        key: Identity of this run within a pipeline run, for retries (default: the
            run name). A retried task's run with the same key is attempt N+1, or,
            with ``MICHELANGELO_MLFLOW_ON_RETRY=resume``, reopens the unfinished one.

    Returns:
        A context manager yielding MLflow's ``ActiveRun``.

    Raises:
        ConfigurationError: Invalid configuration or arguments.
        PreflightError: The tracking server is unreachable, rejects the
            credentials, or has an incompatible version.
        TrackingError: An MLflow call failed.

    Example:
        >>> with tracking_run("fraud-detection", run_name="eda") as run:  # doctest: +SKIP
        ...     mlflow.log_metric("rows", 1_000)
    """
    return TrackingRun(
        experiment,
        run_name,
        tags=tags,
        params=params,
        description=description,
        nested=nested,
        run_id=run_id,
        settings=settings,
        key=key,
    )


@overload
def tracked(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def tracked(
    experiment: str | None = None,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    description: str | None = None,
    nested: bool = False,
    run_id: str | None = None,
    settings: Settings | None = None,
    log_params: str | Iterable[str] | None = None,
    key: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tracked(
    experiment: str | Callable[P, R] | None = None,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    description: str | None = None,
    nested: bool = False,
    run_id: str | None = None,
    settings: Settings | None = None,
    log_params: str | Iterable[str] | None = None,
    key: str | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Run every call of the decorated function in its own :func:`tracking_run`.

    Works bare (``@tracked``) and called (``@tracked(experiment=...)``). The wrapper
    keeps the function's name, qualname, module, docstring, ``__wrapped__`` and
    signature, so it composes with ``@uniflow.task()`` in either order. The run is
    named after the function unless ``run_name`` is given, and tagged
    ``michelangelo.task`` with the function's dotted path.

    Args:
        experiment: As for :func:`tracking_run`.
        run_name: As for :func:`tracking_run`; default: the function's name.
        tags: As for :func:`tracking_run`.
        params: As for :func:`tracking_run`.
        description: As for :func:`tracking_run`; default: none.
        nested: As for :func:`tracking_run`.
        run_id: As for :func:`tracking_run`.
        settings: As for :func:`tracking_run`.
        log_params: Name or names of the function's parameters whose values are
            logged as params on each call. A scalar is logged under its parameter
            name; a mapping, dataclass or pydantic model is flattened into its own
            (dotted) keys, like ``mlflow.log_params(config)``.
        key: Identity of the task within a pipeline run, for retries; default: the
            function's dotted path (see :func:`tracking_run`).

    Returns:
        The wrapped function, or a decorator when called with arguments.

    Raises:
        ConfigurationError: At decoration time, when ``log_params`` names a
            parameter the function does not have, or the function is a generator.

    Example:
        >>> @tracked(experiment="fraud-detection", log_params="config")  # doctest: +SKIP
        ... def train_model(train_data, config: dict):
        ...     mlflow.log_metric("auc", 0.91)
    """
    if callable(experiment):
        return tracked()(experiment)

    names = (log_params,) if isinstance(log_params, str) else tuple(log_params or ())

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        task_function = _uniflow_task(fn)
        if task_function is not None:  # @tracked above @uniflow.task: wrap what it runs
            wrapped_task = copy.copy(task_function)
            wrapped_task._fn = decorate(task_function.fn)
            return wrapped_task  # type: ignore[no-any-return]
        original = inspect.unwrap(fn)
        if inspect.isgeneratorfunction(original) or inspect.isasyncgenfunction(original):
            raise ConfigurationError(
                f"@tracked cannot wrap the generator function {original.__qualname__}: the "
                "run would end before the generator runs",
                variable="fn",
                fix="use `with tracking_run(...)` inside the generator instead",
            )
        signature = inspect.signature(fn)
        unknown = [n for n in names if n not in signature.parameters]
        if unknown:
            raise ConfigurationError(
                f"log_params names {', '.join(map(repr, unknown))}, which "
                f"{original.__qualname__}{signature} does not have",
                variable="log_params",
                fix=f"use parameter names of {original.__qualname__}: "
                f"{', '.join(signature.parameters)}",
            )
        task = _provenance.dotted_path(original)

        def run_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> TrackingRun:
            return TrackingRun(
                experiment,
                run_name or original.__name__,
                tags=tags,
                params={**(params or {}), **_called_params(signature, names, args, kwargs)},
                description=description,
                nested=nested,
                run_id=run_id,
                settings=settings,
                key=key,
                task=task,
            )

        if inspect.iscoroutinefunction(original):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with run_for(args, kwargs):
                    return await fn(*args, **kwargs)  # type: ignore[misc]

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with run_for(args, kwargs):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def _called_params(
    signature: inspect.Signature,
    names: tuple[str, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    if not names:
        return {}
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    logged: dict[str, Any] = {}
    for name in names:
        value = bound.arguments[name]
        flat = _params.flatten(value) if _params.is_nested(value) else {name: value}
        clash = sorted(set(flat) & set(logged))
        if clash:
            raise ConfigurationError(
                f"log_params: {', '.join(clash)} would be logged twice",
                variable="log_params",
                fix="log only one of the parameters that share these keys",
            )
        logged.update(flat)
    return logged


def _uniflow_task(fn: Any) -> Any:
    module = sys.modules.get("michelangelo.uniflow.core.decorator")
    task_class = getattr(module, "TaskFunction", None)
    if task_class is not None and isinstance(fn, task_class):
        return fn
    return None


def next_step(metric: str | None = None) -> int:
    """The step after the last one logged in the active run: where a resumed loop goes on.

    With ``MICHELANGELO_MLFLOW_ON_RETRY=resume`` a retried task reopens its unfinished
    run; start the training loop at ``next_step()`` so its metric history continues
    instead of overwriting earlier steps. In a new run it is 0.

    Args:
        metric: Only consider this metric; default: every metric of the run.

    Returns:
        One more than the largest step logged, or 0.

    Raises:
        ConfigurationError: When no MLflow run is active.

    Example:
        >>> with tracking_run("train") as run:  # doctest: +SKIP
        ...     for epoch in range(next_step("loss"), 10):
        ...         mlflow.log_metric("loss", 1 / (epoch + 1), step=epoch)
    """
    import mlflow

    active = mlflow.active_run()
    if active is None:
        raise ConfigurationError(
            "next_step() needs an active MLflow run",
            variable="metric",
            fix="call it inside `with tracking_run(...)` or a @tracked function",
        )
    settings = current_settings() or Settings()
    with translate(settings.safe_tracking_uri, run_id=active.info.run_id):
        client = mlflow.MlflowClient()
        keys = [metric] if metric else list(client.get_run(active.info.run_id).data.metrics)
        steps = [m.step for k in keys for m in client.get_metric_history(active.info.run_id, k)]
    return max(steps) + 1 if steps else 0
