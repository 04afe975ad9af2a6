"""Runs that span notebook cells: ``start_run`` and the :class:`NotebookRun` handle.

In a notebook a run is started in one cell and ended in another, so it cannot be a
``with`` block. :func:`start_run` enters a :class:`~michelangelo_mlflow._run.TrackingRun`
and keeps it open; the handle ends it (``run.end()``), which gives it exactly the
lifecycle of a tracked run: the same statuses, error tags, spool delivery and
restoration of MLflow's globals. This module owns what the kernel's end adds to that,
for the one run open through it in the process:

- a cell that raises does not end the run (the notebook goes on); ``run.end()``
  records the last cell's error only when asked (``record_error=True``);
- an uncaught exception that ends a script (not a notebook cell) ends the run FAILED,
  through a ``sys.excepthook`` chained in front of the one found, put back afterwards;
- SIGTERM (a kernel shutdown, a pod's eviction) ends it KILLED, as for every tracked
  run (``_signals``);
- interpreter exit with the run still open (a kernel shut down or restarted, a script
  that never called ``run.end()``) ends it KILLED, with ``michelangelo.error.*`` tags
  saying so, through an ``atexit`` hook. MLflow's own exit handler would end it
  FINISHED; it was registered when ``mlflow`` was imported, before ours, so ours runs
  first (``atexit`` runs the last registered first) and MLflow's finds no active run.
"""

from __future__ import annotations

import atexit
import html
import logging
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from typing_extensions import Unpack

from michelangelo_mlflow._run import RunOptions, RunState, TrackingRun
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow.exceptions import ConfigurationError

if TYPE_CHECKING:
    from mlflow.entities import RunInfo

__all__ = ["NotebookRun", "ProcessExit", "start_run"]

log = logging.getLogger("michelangelo_mlflow")

Status = Literal["FINISHED", "FAILED", "KILLED"]
_STATUSES: tuple[Status, ...] = ("FINISHED", "FAILED", "KILLED")


class ProcessExit(BaseException):
    """The interpreter exited with a notebook run still open (ends it as KILLED)."""


class NotebookRun:
    """An open MLflow run that spans notebook cells; create it with :func:`start_run`.

    Plain ``mlflow.log_*`` calls in any later cell land in the run, until
    :meth:`end`. In Jupyter the handle shows as a small block with the run's link in
    the MLflow UI; elsewhere as text. It is a context manager too: leaving the block
    ends the run as ``tracking_run`` does.

    Attributes:
        settings: The run's configuration.
        status: ``RUNNING`` while open, then the status it ended with.

    Example:
        >>> run = mm.start_run(experiment="fraud-detection", run_name="eda")  # doctest: +SKIP
        >>> mlflow.log_metric("rows", 1_000)  # in a later cell  # doctest: +SKIP
        >>> run.end()  # doctest: +SKIP
    """

    def __init__(self, tracking: TrackingRun) -> None:
        self._tracking = tracking
        self.settings = tracking.settings
        self.status: str = "RUNNING"
        self._baseline_error = _last_error()
        self._previous_hook: Any = None

    @classmethod
    def current(cls) -> NotebookRun | None:
        """The run open through :func:`start_run` in this process, if any.

        Example:
            >>> mm.NotebookRun.current().end()  # the handle of a lost variable  # doctest: +SKIP
        """
        return _open_handle()

    # --- what the run is --------------------------------------------------------------
    @property
    def info(self) -> RunInfo:
        """MLflow's ``RunInfo`` of the run as it started (``run_id``, ``experiment_id`` …).

        Example:
            >>> run.info.experiment_id  # doctest: +SKIP
            '1'
        """
        active = self._tracking.active_run
        assert active is not None
        return active.info

    @property
    def run_id(self) -> str:
        """The run's id.

        Example:
            >>> mlflow.get_run(run.run_id)  # doctest: +SKIP
        """
        return str(self.info.run_id)

    @property
    def url(self) -> str | None:
        """The run's page in the MLflow UI; ``None`` for a local store or a Databricks profile.

        Example:
            >>> run.url  # doctest: +SKIP
            'http://mlflow.example.com/#/experiments/1/runs/5f0c...'
        """
        return _run_url(self.settings, self.info.experiment_id, self.run_id)

    @property
    def experiment(self) -> str:
        """The experiment's name as given, else its id.

        Example:
            >>> run.experiment  # doctest: +SKIP
            'fraud-detection'
        """
        return self._tracking.experiment or f"id {self.info.experiment_id}"

    # --- ending -----------------------------------------------------------------------
    def end(self, status: Status | None = None, *, record_error: bool = False) -> None:
        """End the run; calling it again does nothing.

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED``; default ``FINISHED``, or
                ``FAILED`` when ``record_error`` finds an error.
            record_error: Record the last error a cell raised since the run started
                (``michelangelo.error.type``/``message`` tags; the run is FAILED unless
                ``status`` says otherwise). Without it, cell errors are not recorded.

        Raises:
            ConfigurationError: ``status`` is not one of the three.
            TrackingError: The server refused the run's last records.

        Example:
            >>> run.end()  # doctest: +SKIP
            >>> run.end(record_error=True)  # FAILED if a cell raised  # doctest: +SKIP
        """
        if status is not None and status not in _STATUSES:
            raise ConfigurationError(
                f"run.end(status={status!r}): not a status a run can end with",
                variable="status",
                fix=f"pass one of {', '.join(_STATUSES)}, or leave status out (FINISHED)",
            )
        if not isinstance(record_error, bool):
            raise ConfigurationError(
                f"run.end(record_error={record_error!r}) is a {type(record_error).__name__}",
                variable="record_error",
                fix="pass True or False",
            )
        error = self._cell_error() if record_error else None
        self._finish(error, status or ("FAILED" if error is not None else "FINISHED"))

    def _cell_error(self) -> BaseException | None:
        error = _last_error()
        return error if error is not None and error is not self._baseline_error else None

    def _finish(self, error: BaseException | None, status: str) -> None:
        if not self._release():
            return
        self.status = status
        self._tracking._close(error, status=status)

    def _release(self) -> bool:
        """Forget the run as this process's open one; whether it is still to be ended."""
        with STATE.lock:
            if STATE.notebook_run is not self:
                return False
            STATE.notebook_run, STATE.last_notebook_run = None, self
        atexit.unregister(self._at_exit)
        if sys.excepthook == self._excepthook:  # a bound method: equal, not identical
            sys.excepthook = self._previous_hook
        return self._tracking.state is RunState.OPEN

    # --- the kernel's end ---------------------------------------------------------------
    def _at_exit(self) -> None:
        if self._tracking.state is not RunState.OPEN:
            return
        if self._tracking.ended_by_body():  # mlflow.end_run() ended it: as in MLflow
            try:
                self._finish(None, "FINISHED")
            except Exception as exc:  # at exit: report, never raise
                log.warning("could not end MLflow run %s at exit: %s", self.run_id, exc)
            return
        log.warning(
            "MLflow run %s was still open when the process exited; ending it as KILLED "
            "(end it with run.end() to finish it)",
            self.run_id,
        )
        error = ProcessExit("the process exited with the run still open (run.end() was not called)")
        try:
            self._finish(error, "KILLED")
        except Exception as exc:  # at exit: report, never raise
            log.warning("could not end MLflow run %s at exit: %s", self.run_id, exc)

    def _excepthook(
        self, kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        previous = self._previous_hook
        try:
            if self._release():
                self.status = "KILLED" if isinstance(value, KeyboardInterrupt) else "FAILED"
                self._tracking._close(value.with_traceback(tb))
        except Exception as exc:
            log.warning("could not end MLflow run %s: %s", self.run_id, exc)
        finally:
            previous(kind, value, tb)

    def _install(self) -> None:
        atexit.register(self._at_exit)
        if not _in_ipython():  # in IPython a cell's error does not end the process
            self._previous_hook = sys.excepthook
            sys.excepthook = self._excepthook

    # --- context manager ----------------------------------------------------------------
    def __enter__(self) -> NotebookRun:
        if self._tracking.state is not RunState.OPEN:
            raise RuntimeError(f"MLflow run {self.run_id} has ended ({self.status})")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._release():
            from michelangelo_mlflow._run import _status_for

            self.status = _status_for(exc)
            self._tracking.__exit__(exc_type, exc, tb)

    # --- display ------------------------------------------------------------------------
    def __repr__(self) -> str:
        url = f", url={self.url!r}" if self.url else ""
        return (
            f"NotebookRun(run_id={self.run_id!r}, run_name={self.info.run_name!r}, "
            f"experiment={self.experiment!r}, status={self.status!r}{url})"
        )

    def _repr_html_(self) -> str:
        name = html.escape(str(self.info.run_name or self.run_id))
        link = (
            f'<a href="{html.escape(self.url)}" target="_blank" rel="noopener">{name}</a>'
            if self.url
            else f"{name} (local store: no UI link)"
        )
        return (
            '<div class="michelangelo-mlflow-run" style="font-family: sans-serif; '
            'border-left: 3px solid #0194e2; padding: 2px 8px">'
            f"<b>MLflow run</b> {link} &middot; <code>{html.escape(self.run_id)}</code><br>"
            f"experiment {html.escape(self.experiment)} &middot; status "
            f"<b>{html.escape(self.status)}</b></div>"
        )


def start_run(
    experiment: str | None = None,
    run_name: str | None = None,
    **options: Unpack[RunOptions],
) -> NotebookRun:
    """Start a tracked run that stays open across notebook cells, until ``run.end()``.

    The run is opened as :func:`~michelangelo_mlflow.tracking_run` opens one (same
    options, configuration, preflight and provenance tags) and kept open: plain
    ``mlflow.log_*`` calls in later cells land in it. It ends with the right status
    without the user's help when the kernel does not reach ``run.end()``: KILLED on
    SIGTERM or when the interpreter exits (a kernel shut down or restarted), FAILED
    when an uncaught exception ends a script. A cell that raises does not end it.

    Args:
        experiment: As for :func:`~michelangelo_mlflow.tracking_run`.
        run_name: As for :func:`~michelangelo_mlflow.tracking_run`.
        **options: The run's options (:class:`RunOptions`), as for
            :func:`~michelangelo_mlflow.tracking_run`; ``autolog`` and
            ``system_metrics`` stay in force until the run ends.

    Returns:
        The open run's handle.

    Raises:
        ConfigurationError: Invalid arguments, or a run started with ``start_run`` is
            still open in this process (the message names it).
        PreflightError: The tracking server is unreachable or rejects the credentials.

    Example:
        >>> run = mm.start_run(experiment="fraud-detection", autolog="sklearn")  # doctest: +SKIP
        >>> model.fit(x, y)  # another cell: logged into the run  # doctest: +SKIP
        >>> run.end()  # doctest: +SKIP
    """
    tracking = TrackingRun(experiment, run_name, **options)  # bad arguments: raised here
    tracking.signals_end_run = True  # no block to unwind: SIGTERM's handler ends the run
    with STATE.lock:
        if (open_run := _open_handle()) is not None:
            raise _already_open(open_run)
        tracking.__enter__()
        run = NotebookRun(tracking)
        STATE.notebook_run = run
        run._install()
    return run


def _already_open(run: NotebookRun) -> ConfigurationError:
    return ConfigurationError(
        f"MLflow run {run.run_id} ({run.info.run_name!r} in experiment {run.experiment!r}) "
        "is still open: start_run keeps one run open at a time",
        variable="start_run",
        fix="end it first with run.end() on the handle start_run returned (in a notebook, "
        "%mm_run shows it; mm.NotebookRun.current() returns it), or use "
        "mm.tracking_run(..., nested=True) for a run inside it",
    )


def _open_handle() -> NotebookRun | None:
    """The open handle; one whose run SIGTERM's handler ended (and that lived on) is let go."""
    with STATE.lock:
        run: NotebookRun | None = STATE.notebook_run
        if run is not None and run._tracking.state is not RunState.OPEN:
            run._release()
            run.status = "KILLED"
            return None
        return run


def last() -> NotebookRun | None:
    """The last run started with :func:`start_run` that has ended, if any."""
    with STATE.lock:
        ended: NotebookRun | None = STATE.last_notebook_run
        return ended


def _last_error() -> BaseException | None:
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return error if isinstance(error, BaseException) else None


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


def _run_url(settings: Any, experiment_id: str, run_id: str) -> str | None:
    if settings.scheme in ("http", "https"):
        base = settings.safe_tracking_uri.rstrip("/")
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    if settings.scheme == "databricks" and settings.databricks_host:
        host = settings.databricks_host.rstrip("/")
        return f"{host}/ml/experiments/{experiment_id}/runs/{run_id}"
    return None
