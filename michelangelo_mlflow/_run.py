"""The tracked run: ``tracking_run`` and the lifecycle behind ``@tracked``.

A tracked run points MLflow at the configured server for its duration (and puts
MLflow's globals back afterwards), checks the server before the first run, creates or
explicitly resumes the run with provenance tags, sends everything logged in it
through its write-ahead spool, and always ends it with the status that matches what
happened: FINISHED, FAILED (with the error recorded) or KILLED. It never leaves a run
RUNNING when it can reach the server within the grace, never resumes an inherited
``MLFLOW_RUN_ID``, and never shows a failed task's run as FINISHED.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import logging
import os
import signal
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict

from typing_extensions import Unpack

from michelangelo_mlflow import _params, _pipeline, _provenance, _tags
from michelangelo_mlflow._autolog import autolog_scope, resolve_autolog
from michelangelo_mlflow._errors import (
    MODEL_NOT_LOGGED,
    failed_logging_a_model,
    from_foreign,
    raised_by_library,
    translate,
    with_note,
)
from michelangelo_mlflow._experiment import experiment_id
from michelangelo_mlflow._logging.closing import close_run
from michelangelo_mlflow._logging.courier import Delivery, RunSpool, courier, open_run, take_over
from michelangelo_mlflow._logging.delivery import Route, is_busy_answer
from michelangelo_mlflow._logging.opening import route_for, spool_directory, spool_terms
from michelangelo_mlflow._logging.store import routing_to, tracking
from michelangelo_mlflow._preflight import ensure_preflight
from michelangelo_mlflow._retry import Budget, retry_call
from michelangelo_mlflow._scope import (
    ScopeMode,
    holder_description,
    mlflow_scope,
    set_active_experiment,
)
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._signals import SignalScope, Terminated
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    MichelangeloMlflowWarning,
    TrackingError,
)

if TYPE_CHECKING:
    from mlflow import ActiveRun
    from mlflow.tracking import MlflowClient

__all__ = [
    "RunOptions",
    "RunState",
    "TrackingRun",
    "check_arguments",
    "current_run",
    "current_settings",
    "next_step",
    "resolve_settings",
    "tracking_run",
]

log = logging.getLogger("michelangelo_mlflow")

_current: contextvars.ContextVar[TrackingRun | None] = contextvars.ContextVar(
    "michelangelo_mlflow_current_run", default=None
)


class RunOptions(TypedDict, total=False):
    """The options of a tracked run, shared by :func:`tracking_run` and ``@tracked``.

    Every key is optional; see :func:`tracking_run` for what each one does.
    """

    tags: Mapping[str, Any] | None
    params: Mapping[str, Any] | None
    description: str | None
    nested: bool
    run_id: str | None
    settings: Settings | None
    key: str | None
    autolog: bool | str | Sequence[str] | Mapping[str, Any] | None
    system_metrics: bool | None


def current_run() -> TrackingRun | None:
    """The innermost open tracked run in this context, if any."""
    return _current.get()


def current_settings() -> Settings | None:
    """The settings of the innermost open tracked run, if any."""
    run = _current.get()
    return run.settings if run is not None else None


class RunState(enum.Enum):
    """Lifecycle of a :class:`TrackingRun` (and of a worker's handle)."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"

    @staticmethod
    def enter(state: RunState, what: str) -> RunState:
        """The state after entering: OPEN; a second entry is a clear error.

        Raises:
            RuntimeError: The object was entered before.
        """
        if state is not RunState.NEW:
            raise RuntimeError(
                f"this {what} is {state.value}: a {what} can be entered once; call "
                f"{what}(...) again for another"
            )
        return RunState.OPEN


class TrackingRun:
    """A context manager around one MLflow run; create it with :func:`tracking_run`.

    Entering yields MLflow's ``ActiveRun``, so plain ``mlflow.log_*`` calls inside
    the block land in the run. It can be entered once.

    Attributes:
        settings: The configuration, read when the run opens.
        active_run: MLflow's ``ActiveRun`` while open.
        spool: The run's write-ahead spool while open (``None`` for a local store or
            with ``MICHELANGELO_MLFLOW_SPOOL=off``).
    """

    def __init__(
        self,
        experiment: str | None = None,
        run_name: str | None = None,
        *,
        task: str | None = None,
        **options: Unpack[RunOptions],
    ) -> None:
        check_arguments(experiment, run_name, options)
        self.experiment = experiment
        self.run_name = run_name
        self.task = task
        self.options = options
        self.tags = dict(options.get("tags") or {})
        self.params = dict(options.get("params") or {})
        self.nested = bool(options.get("nested", False))
        self.run_id = options.get("run_id")
        self.parent_run_id: str | None = None
        self.settings = resolve_settings(options.get("settings"))
        self.autolog = resolve_autolog(options.get("autolog"))
        self.system_metrics = options.get("system_metrics")
        # Invalid params and tags fail here, before anything talks to a server.
        self._prepared_params = _params.prepare(
            self.params, kind="param", secrets=self.settings.secret_values()
        )
        _params.prepare(self.tags, kind="tag", secrets=self.settings.secret_values())
        self.state = RunState.NEW
        self.active_run: ActiveRun | None = None
        self.spool: RunSpool | None = None
        self.writer: _params.ParamTagWriter | None = None
        self._mode: ScopeMode = "applied"
        self._pid = os.getpid()
        self.directory: Path | None = None
        """The spool directory of the run (resolved when it starts), if it has one."""
        self._route: Route | None = None
        self._signals: SignalScope | None = None
        self.signals_end_run = False
        """SIGTERM ends the run from the handler (a notebook run: no block to unwind)."""
        self.workers_may_nest = False
        """Worker processes got this run (``worker_environment``): at its end, children
        they opened and left RUNNING (Ray's ``setup_mlflow``) get the block's status."""
        self._supersedes_error = False
        self._mlflow_client: MlflowClient | None = None
        self._stack = contextlib.ExitStack()
        self._token: contextvars.Token[TrackingRun | None] | None = None
        self._refusals: list[MichelangeloMlflowError] = []
        """Refusals of the tracked runs nested in this one, named when this block ends."""

    # --- entering ---------------------------------------------------------------------
    def __enter__(self) -> ActiveRun:
        self.state = RunState.enter(self.state, "tracking_run")
        try:
            self._open()
        except BaseException as exc:
            self._close(exc)
            raise
        assert self.active_run is not None
        return self.active_run

    def _open(self) -> None:
        settings = self.settings
        directory = spool_directory(settings)  # unwritable: an error before any run exists
        self._mode = self._stack.enter_context(mlflow_scope(settings))
        self._check_mode(directory)
        ensure_preflight(settings)
        route = route_for(settings) if directory is not None else None
        self.directory, self._route = directory, route
        self._stack.enter_context(routing_to(route))
        self._stack.enter_context(autolog_scope(self.autolog, run=self._describe_self()))
        with translate(settings.safe_tracking_uri, run_id=self.run_id):
            self.active_run = self._start_taking_turns(route)
        run = self.active_run
        if directory is not None and route is not None:
            self.spool = self._open_spool(directory, route, run)
        if self._mode == "applied":
            set_active_experiment(run.info.experiment_id)
        self._token = _current.set(self)
        self._stack.enter_context(tracking(run.info.run_id))
        self._signals = self._stack.enter_context(
            SignalScope(self._on_signal, sigint=not self.signals_end_run)
        )
        self.writer = _params.ParamTagWriter(
            self._client(), run.info.run_id, settings.secret_values()
        )
        with translate(settings.safe_tracking_uri, run_id=run.info.run_id):
            if self._prepared_params:  # start_run returned the run as stored: params are fresh
                self.writer.log_params(self._prepared_params, existing=run.data.params)
            if self._supersedes_error:  # this attempt is not failed (yet): kept as previous_error
                self.writer.delete_tags(_tags.ERROR_TAGS)

    def _describe_self(self) -> str:
        name = f" {self.run_name!r}" if self.run_name else ""
        return f"the run{name} in experiment {self.experiment or '(default)'!r}"

    def _check_mode(self, directory: Path | None) -> None:
        if self._mode != "routed":
            return
        other = holder_description()
        local_holder = not other.startswith(("http://", "https://", "databricks"))
        if directory is None or self.run_id is not None or local_holder:
            if directory is None:
                what = "without the spool"
            elif self.run_id is not None:
                what = "resuming a run"
            else:
                what = "(only a run on a tracking server can be routed around it)"
            raise ConfigurationError(
                f"a tracked run on {other} is open in another thread, and MLflow's tracking "
                f"URI and credentials are process-wide: a run on "
                f"{self.settings.safe_tracking_uri} {what} cannot be kept apart from it",
                variable="settings",
                fix="run the two on the same server and credentials, run them in separate "
                "processes, or (for new runs) keep MICHELANGELO_MLFLOW_SPOOL on, which routes "
                "each run to its own server",
            )
        warnings.warn(
            f"a tracked run on {other} holds MLflow's process-wide configuration (in another "
            f"thread): this run's metrics, params, tags, status and reads go to "
            f"{self.settings.safe_tracking_uri}, but mlflow.get_tracking_uri(), artifacts, "
            "models and registry calls made through MLflow's fluent API in this thread follow "
            f"{other} until that run ends; use MlflowClient("
            f"{self.settings.safe_tracking_uri!r}) for them, or separate processes",
            MichelangeloMlflowWarning,
            stacklevel=4,
        )

    def _open_spool(self, directory: Path, route: Route, run: ActiveRun) -> RunSpool:
        from michelangelo_mlflow._logging.replay import replay_in_background

        settings = self.settings
        child = take_over(run.info.run_id)  # nested under a tracked run: opened as its child
        if child is not None:
            return child
        info = run.info
        spool = open_run(
            directory,
            route,
            info.run_id,
            info.experiment_id,
            run=run,
            role="owner",
            **spool_terms(settings),
        )
        replay_in_background(directory, route, interval=settings.flush_interval)
        return spool

    def _on_signal(self, signum: int) -> None:
        """SIGTERM or SIGINT in the block: raise where it is, the run ends KILLED on the way out.

        A notebook run has no block: the run ends here, then the signal is handed on.
        """
        if self.signals_end_run:
            self._close(Terminated(signum))
            self._hand_on_signal(Terminated(signum))
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def ended_by_body(self) -> bool:
        """Whether code in the run ended it through MLflow (``mlflow.end_run()``)."""
        import mlflow

        if self.spool is not None and self.spool.held is not None:
            return True
        active = mlflow.active_run()
        return self.active_run is not None and (
            active is None or active.info.run_id != self.active_run.info.run_id
        )

    def _client(self) -> MlflowClient:
        if self._mlflow_client is None:
            from mlflow.tracking import MlflowClient

            # The run's own server: a routed run's records go there through its spool.
            self._mlflow_client = MlflowClient(self.settings.effective_tracking_uri)
        return self._mlflow_client

    def _start_taking_turns(self, route: Route | None) -> ActiveRun:
        """Start the run, taking turns with this host's other tasks on a busy server.

        The requests that start it wait for a slot of the host's gate, as the spool's
        do, and an answer that the server is busy and did nothing (a database error in
        a 400, a 429 or 503) is tried again with backoff, within the grace: 64 tasks
        starting at once on one server start rather than fail. The local work (the
        tags) is done before the wait: a slot is held for requests only.
        """
        tags = self._start_tags()

        def start(timeout: float) -> ActiveRun:
            if route is None:
                return self._start(tags)
            pacer = courier(self.settings.flush_interval).pacer(route)
            with pacer.gate.slot(wait=route.timeout, limit=pacer.slots()):
                return self._start(tags)

        return retry_call(
            start,
            attempts=1_000,  # bounded by the grace
            budget=Budget(self.settings.spool_grace),
            timeout=self.settings.spool_grace,
            on=(Exception,),
            when=is_busy_answer,
            initial_wait=0.25,
            max_wait=8.0,
        )

    def _start_tags(self) -> dict[str, str]:
        """The tags the run starts with (no request is made)."""
        _load_mlflow_run_context()
        return {
            # MLflow may fill mlflow.user from MLFLOW_TRACKING_USERNAME, a credential:
            # record the OS user instead unless the caller names one.
            "mlflow.user": _provenance.os_user(),
            # what mlflow.<flavor>.autolog() tags the runs it creates with
            **(self.autolog.tags if self.autolog is not None else {}),
            **self.tags,
            **_provenance.provenance_tags(self.settings, task=self.task),
        }

    def _start(self, start_tags: Mapping[str, str]) -> ActiveRun:
        import mlflow

        active = mlflow.active_run()
        if active is not None and not self.nested:
            raise ConfigurationError(
                f"MLflow run {active.info.run_id} is already active in this thread",
                variable="nested",
                fix="pass nested=True to nest this run under it, or end it first "
                "(mlflow.end_run())",
            )
        tags = dict(start_tags)  # a try again starts from the same tags
        if self.run_id is not None:
            return self._resume(self.run_id, tags, description=True)
        if self.nested and active is not None and self.experiment is None:
            experiment = active.info.experiment_id  # where MLflow nests a run: its parent's
        else:
            experiment = experiment_id(self._client(), self.settings, self.experiment)
        key = _pipeline.task_key(
            self.settings, task=self.options.get("key") or self.task, run_name=self.run_name
        )
        if key is not None:
            attempt = _pipeline.find_attempt(self._client(), experiment, key, self.settings)
            tags.update(attempt.tags())
            if attempt.resume and attempt.previous is not None:
                return self._resume(attempt.previous.info.run_id, tags, description=False)
        if self.settings.pipeline_run_mode == "nested" and active is None and key is not None:
            self.parent_run_id = _pipeline.pipeline_parent(
                self._client(), experiment, self.settings
            )
            tags["mlflow.parentRunId"] = self.parent_run_id
        return mlflow.start_run(
            experiment_id=experiment,
            run_name=self.run_name,
            nested=self.nested,
            tags=self._prepared(tags),
            description=self._description(),
            log_system_metrics=self.system_metrics,
        )

    def _resume(self, run_id: str, tags: dict[str, Any], *, description: bool) -> ActiveRun:
        import mlflow

        from michelangelo_mlflow._logging.replay import replay_run

        if self.directory is not None and self._route is not None:
            # What earlier attempts left comes first: next_step() and the history see it.
            replay_run(self.directory, self._route, run_id, self.settings.spool_grace)
        previous = self._check_resumable(run_id)
        superseded = _provenance.superseded_error_tags(previous.data.tags)
        tags.update(superseded)
        self._supersedes_error = bool(superseded)
        return mlflow.start_run(
            run_id=run_id,
            run_name=self.run_name,
            nested=self.nested,
            tags=self._prepared(tags),
            description=self._description() if description else None,
            log_system_metrics=self.system_metrics,
        )

    def _check_resumable(self, run_id: str) -> Any:
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
        return run

    def _prepared(self, tags: dict[str, Any]) -> dict[str, str]:
        return _params.prepare(tags, kind="tag", secrets=self.settings.secret_values())

    def _description(self) -> str | None:
        description = self.options.get("description")
        if description is None:
            return None
        return _params.redact_text(description, self.settings.secret_values())

    # --- leaving ----------------------------------------------------------------------
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(exc)
        if isinstance(exc, Exception) and raised_by_library(tb):
            ours = from_foreign(
                exc, tracking_uri=self.settings.safe_tracking_uri, run_id=self._run_id
            )
            if ours is not None and failed_logging_a_model(tb):
                ours = with_note(ours, "while logging a model", fix=MODEL_NOT_LOGGED)
            if ours is not None:
                raise ours from exc
        self._hand_on_signal(exc)

    def _hand_on_signal(self, exc: BaseException | None) -> None:
        """After a close caused by (or during) a signal, give it to what was there before."""
        scope = self._signals
        if scope is None:
            return
        signum = exc.signum if isinstance(exc, Terminated) else scope.pending
        if signum is not None:
            scope.pending = None
            scope.hand_on(signum)

    @property
    def _run_id(self) -> str | None:
        return self.active_run.info.run_id if self.active_run else self.run_id

    def _close(self, exc: BaseException | None, status: str | None = None) -> None:
        """End the run: ``status``, or the one that matches ``exc`` (see ``_status_for``)."""
        if self.state is RunState.CLOSED:
            return
        self.state = RunState.CLOSED
        if self._signals is not None:
            self._signals.closing = True  # a signal now is handed on after the close
        if os.getpid() != self._pid:  # a forked child leaving the block: not its run to end
            self._leave_forked()
            return
        status = status or _status_for(exc)
        problems: list[MichelangeloMlflowError] = []
        refusals = self._refusals
        enclosing = self._enclosing()
        try:
            if self.spool is not None:
                self.spool.closing = True  # the final status is stored by close_run, last
            if self.active_run is not None:
                problems += self._end(exc, status)
            if self.spool is not None:
                rest, refused = self._deliver_rest(status)
                problems += rest
                refusals = [*refused, *refusals]
        finally:
            if self._token is not None:
                _reset_current(self._token)
            self._stack.close()
        if refusals and exc is None and enclosing is not None:
            # Plain MLflow raised each at its call, which the body may have caught: the
            # enclosing block goes on and names them when it ends, as this one would.
            enclosing._refusals += refusals
            refusals = []
        problems += refusals
        if problems and exc is None:
            for problem in problems[1:]:
                log.warning("%s", problem)
            raise problems[0]
        for problem in problems:  # the task's own error is what propagates
            log.warning("%s; the task's own error follows", problem)

    def _enclosing(self) -> TrackingRun | None:
        """The tracked run open around this one in this process, if any."""
        if self._token is None or self._token.old_value is contextvars.Token.MISSING:
            return None
        outer: TrackingRun | None = self._token.old_value
        if outer is None or outer.state is RunState.CLOSED or outer._pid != os.getpid():
            return None
        return outer

    def _leave_forked(self) -> None:
        """Deliver what this forked child logged to the run; the parent ends the run."""
        try:
            if self.spool is not None:
                close_run(self.spool, status=None, grace=self.settings.spool_grace)
        finally:
            if self._token is not None:
                _reset_current(self._token)
            self._stack.close()

    def _end(self, exc: BaseException | None, status: str) -> list[MichelangeloMlflowError]:
        import mlflow

        assert self.active_run is not None
        run_id = self.active_run.info.run_id
        try:
            with translate(self.settings.safe_tracking_uri, run_id=run_id):
                if exc is not None and self.writer is not None:
                    self.writer.set_tags(
                        _provenance.error_tags(exc, secrets=self.settings.secret_values())
                    )
                ended_ours = False
                while (active := mlflow.active_run()) is not None and not ended_ours:
                    ended_ours = active.info.run_id == run_id
                    mlflow.end_run(status)  # also ends runs the body left open inside ours
                if not ended_ours:  # the body ended our run itself; record what happened
                    self._record_status(run_id, status)
        except TrackingError as error:
            return [error]
        if self.workers_may_nest:
            self._end_workers_children(run_id, status)
        if self.parent_run_id is not None:
            self._converge_on_parent(run_id, status)
        return []

    def _end_workers_children(self, run_id: str, status: str) -> None:
        """Give the block's status to children that worker processes left RUNNING."""
        client = self._client()
        experiments = [e.experiment_id for e in client.search_experiments()]
        try:
            with translate(self.settings.safe_tracking_uri, run_id=run_id):
                left = client.search_runs(
                    experiments,
                    filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' "
                    "and attributes.status = 'RUNNING'",
                )
                for child in left:
                    if child.info.run_id not in STATE.spools:  # ours end with close_run
                        client.set_terminated(child.info.run_id, status)
        except TrackingError as error:
            log.warning("could not end the children workers left open in run %s: %s", run_id, error)

    def _record_status(self, run_id: str, status: str) -> None:
        """The block ended a run the body had ended itself: a failure or kill wins."""
        if self.spool is not None:
            return  # the spool held what the body wrote; close_run decides
        if status == "FINISHED":
            stored = self._client().get_run(run_id).info.status
            if stored in ("FAILED", "KILLED"):
                return  # mlflow.end_run("FAILED") in the block stays FAILED, as in MLflow
        self._client().set_terminated(run_id, status)

    def _deliver_rest(
        self, status: str
    ) -> tuple[list[MichelangeloMlflowError], list[MichelangeloMlflowError]]:
        """Deliver the rest of the run; returns the problems and the server's refusals."""
        assert self.spool is not None
        grace = self.settings.spool_grace
        outcomes = close_run(self.spool, status=status, grace=grace)
        problems = [p for outcome in outcomes if (p := _error(outcome, self.spool)) is not None]
        refusals: list[MichelangeloMlflowError] = [
            r for outcome in outcomes if (r := _refusal(outcome, self.spool)) is not None
        ]
        pending = [o for o in outcomes if not o.delivered and o.error is None]
        if pending:
            why = pending[0].outage or "it was still taking them, more slowly than they came"
            warnings.warn(
                f"the MLflow tracking server at {self.settings.safe_tracking_uri} did not take "
                f"the last records of run {self.spool.run_id} within the "
                f"{grace:g} s grace ({why}); they are kept, with "
                f"the run's status {status}, in {self.spool.directory}: run "
                f"`michelangelo-mlflow sync --spool {self.spool.directory}` "
                "when the server is back (the next tracked run on this server in a process "
                "started here does it too); until then the run shows RUNNING",
                MichelangeloMlflowWarning,
                stacklevel=4,
            )
        return problems, refusals

    def _converge_on_parent(self, run_id: str, status: str) -> None:
        assert self.parent_run_id is not None
        client = self._client()
        experiment = self.active_run.info.experiment_id if self.active_run else ""
        try:
            with translate(self.settings.safe_tracking_uri, run_id=run_id):
                parent = _pipeline.reconcile(client, experiment, self.settings)
                if parent != self.parent_run_id:
                    client.set_tag(run_id, "mlflow.parentRunId", parent)
                    self.parent_run_id = parent
                if status != "FINISHED":
                    _pipeline.mark_parent_failed(client, parent)
        except LookupError:
            return
        except TrackingError as error:  # the next task to end reconciles again
            log.warning("could not converge run %s on its pipeline's parent run: %s", run_id, error)


def _error(outcome: Delivery, spool: RunSpool) -> MichelangeloMlflowError | None:
    """What kept the run's records from being delivered, if anything did."""
    if outcome.error is None:
        return None
    where = outcome.path or spool.directory
    return with_note(
        outcome.error,
        f"the run's undelivered records are kept in {where}",
        fix=f"then run `michelangelo-mlflow sync --spool {spool.directory}`",
    )


def _refusal(outcome: Delivery, spool: RunSpool) -> TrackingError | None:
    """The records of the run the server refused, named in one error."""
    if outcome.error is None and outcome.rejected:
        shown = "; ".join(
            f"{_describe(record)} ({reason})" for record, reason in outcome.rejected[:5]
        )
        more = f" and {len(outcome.rejected) - 5} more" if len(outcome.rejected) > 5 else ""
        return TrackingError(
            f"the MLflow tracking server at {spool.route.tracking_uri} refused "
            f"{len(outcome.rejected)} record(s) of run {spool.run_id} as invalid: {shown}{more}; "
            "everything else was logged",
            tracking_uri=spool.route.tracking_uri,
            run_id=spool.run_id,
            error_code="INVALID_PARAMETER_VALUE",
            fix="log these values under valid keys or shorter values (MLflow params cannot "
            "change once logged, a tag must exist to be deleted, an artifact must fit the "
            "server's size limit)",
        )
    return None


def _describe(record: list[Any]) -> str:
    kinds = {"m": "metric", "p": "param", "t": "tag", "d": "deleted tag", "u": "run update"}
    kind = kinds.get(record[0], record[0])
    if len(record) > 2:
        value = str(record[2])
        return f"{kind} {record[1]!r} = {value[:40]!r}{'…' if len(value) > 40 else ''}"
    return f"{kind} {record[1]!r}"


def _reset_current(token: contextvars.Token[TrackingRun | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # ended from another context (atexit, a notebook's other cell task)
        _current.set(token.old_value if token.old_value is not contextvars.Token.MISSING else None)


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, KeyboardInterrupt | Terminated):
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "FINISHED"
    return "FAILED"


def resolve_settings(given: Settings | None = None) -> Settings:
    """Explicit settings (their environment part read again now), else the enclosing run's."""
    if given is not None:
        return given.refreshed()
    return current_settings() or Settings()


@functools.cache
def _load_mlflow_run_context() -> None:
    """Load what MLflow's ``start_run`` needs for its context tags, once per process.

    Their first resolution (git, notebook, source) imports modules for a tenth of a
    second of CPU, which 64 tasks starting at once should not spend holding the gate's
    slots: a run's start does it before taking one.
    """
    from mlflow.tracking.context.registry import resolve_tags

    resolve_tags()


def check_arguments(experiment: Any, run_name: Any, options: Mapping[str, Any]) -> None:
    """Refuse arguments of the wrong type or shape before anything else happens.

    Raises:
        ConfigurationError: Naming the argument and what to pass instead.
    """
    for name, value in (("experiment", experiment), ("run_name", run_name)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(
                f"{name}={value!r} is a {type(value).__name__}, not a str",
                variable=name,
                fix=f"pass the {name.replace('_', ' ')} as a string, such as "
                f'{name}="fraud-detection"',
            )
        if isinstance(value, str) and not value.strip():
            raise ConfigurationError(
                f"{name}={value!r} is empty",
                variable=name,
                fix=f"pass a non-blank {name.replace('_', ' ')}, or leave it out "
                + ("to use MLFLOW_EXPERIMENT_NAME or the default experiment" if name == "experiment"
                   else "to let MLflow generate one"),
            )  # fmt: skip
    _check_option_types(options)
    resolve_autolog(options.get("autolog"))  # a flavor that is not installed, an unknown option
    if options.get("system_metrics"):
        _check_system_metrics()


def _check_system_metrics() -> None:
    import importlib.util

    if importlib.util.find_spec("psutil") is None:
        raise ConfigurationError(
            "system_metrics=True needs the psutil package, which is not installed",
            variable="system_metrics",
            fix="pip install 'michelangelo-mlflow[system-metrics]' (psutil; add the [gpu] extra "
            "for GPU metrics), or leave system_metrics out",
        )


def _check_option_types(options: Mapping[str, Any]) -> None:
    expected: dict[str, tuple[type | tuple[type, ...], str]] = {
        "tags": (Mapping, 'a mapping of tag names to values, such as tags={"team": "risk"}'),
        "params": (Mapping, 'a mapping of param names to values, such as params={"lr": 0.1}'),
        "description": (str, "a string"),
        "nested": (bool, "True or False"),
        "run_id": (str, "the run id as a string"),
        "settings": (Settings, "a michelangelo_mlflow.Settings(...) object"),
        "key": (str, "a string that identifies the task in its pipeline run"),
        "autolog": (
            (bool, str, list, tuple, Mapping),
            'True, a flavor name ("sklearn"), a list of flavor names, or a mapping of autolog '
            'options such as {"log_models": False}',
        ),
        "system_metrics": (bool, "True or False"),
    }
    for name, value in options.items():
        if name not in expected:
            raise ConfigurationError(
                f"tracking_run() got an unexpected option {name!r}",
                variable=name,
                fix=f"use one of: {', '.join(expected)}",
            )
        kind, what = expected[name]
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(
                f"{name}={_short(value)} is a {type(value).__name__}",
                variable=name,
                fix=f"pass {what}",
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def tracking_run(
    experiment: str | None = None,
    run_name: str | None = None,
    **options: Unpack[RunOptions],
) -> TrackingRun:
    """Open an MLflow run on the configured tracking server, and end it correctly.

    Inside the block, plain ``mlflow.log_*`` calls land in the run, through its
    write-ahead spool: they return once the record is on local disk, and a background
    thread sends them in batches, so a tracking-server outage never stalls or kills
    the task (see "When the tracking server is down"). On exit the run is FINISHED;
    if the block raises, it is FAILED (with the exception's type and redacted message
    as ``michelangelo.error.*`` tags) and the exception propagates unchanged (only a
    failure of a call into MLflow becomes this SDK's typed error, chained); on
    ``KeyboardInterrupt`` or SIGTERM it is KILLED. MLflow's globals (tracking URI,
    registry URI, credentials, HTTP retry budget) are set for the block and restored
    after the last tracked run using them ends.

    Args:
        experiment: Experiment name; default ``MLFLOW_EXPERIMENT_NAME`` or
            ``MLFLOW_EXPERIMENT_ID``, then ``"Default"``. Created when missing.
        run_name: The run's name; MLflow generates one when omitted.
        **options: The run's options (:class:`RunOptions`):

            - ``tags``: tags to set (nested mappings flattened with dots; secrets redacted);
            - ``params``: params to log (nested mappings flattened with dots;
              secret-looking keys and passwords in URLs redacted; values over 6,000
              characters cut with a warning);
            - ``description``: the run's description (``mlflow.note.content``), redacted;
            - ``nested``: nest under the run already active in this thread;
            - ``run_id``: resume this run instead of creating one (an inherited
              ``MLFLOW_RUN_ID`` is never resumed silently: pass it here);
            - ``settings``: the configuration (its values from the environment are read
              again when the run starts); default: the enclosing tracked run's, else
              the environment's;
            - ``key``: identity of this run within a pipeline run, for retries (default:
              the run name): a retried task's run with the same key is attempt N+1, or,
              with ``MICHELANGELO_MLFLOW_ON_RETRY=resume``, reopens the unfinished one;
            - ``autolog``: MLflow autologging, in force while the run is open and put
              back as it was when it ends: ``True`` (``mlflow.autolog()``), a flavor
              name or a list of them (``"sklearn"``, ``["sklearn", "xgboost"]``), or a
              mapping of ``autolog()`` options (``{"log_models": False}``; flavor names
              as keys give a flavor its own options). ``False`` switches autologging
              off for the run. Everything it logs lands in this run;
            - ``system_metrics``: log MLflow's system metrics (CPU, memory, disk,
              network, GPU) for the run every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
              seconds (needs ``michelangelo-mlflow[system-metrics]``); ``None``
              follows ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``.

    Returns:
        A context manager yielding MLflow's ``ActiveRun``.

    Raises:
        ConfigurationError: Invalid configuration or arguments (before any run exists).
        PreflightError: The tracking server is unreachable, rejects the
            credentials, or has an incompatible version.
        TrackingError: An MLflow call failed, or the server refused records of the run.

    Example:
        >>> with tracking_run("fraud-detection", run_name="eda") as run:  # doctest: +SKIP
        ...     mlflow.log_metric("rows", 1_000)

        Autologging and system metrics for this run only:

        >>> with tracking_run("fraud", autolog="sklearn", system_metrics=True):  # doctest: +SKIP
        ...     LogisticRegression().fit(x, y)
    """
    return TrackingRun(experiment, run_name, **options)


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
    settings = resolve_settings()
    with translate(settings.safe_tracking_uri, run_id=active.info.run_id):
        client = mlflow.MlflowClient()
        keys = [metric] if metric else list(client.get_run(active.info.run_id).data.metrics)
        steps = [m.step for k in keys for m in client.get_metric_history(active.info.run_id, k)]
    return max(steps) + 1 if steps else 0
