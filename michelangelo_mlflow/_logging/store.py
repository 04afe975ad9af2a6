"""MLflow tracking stores that send an open tracked run's records through its spool.

MLflow picks a tracking store by the tracking URI's scheme, from a registry that
packages extend through the ``mlflow.tracking_store`` entry point; MLflow registers
plugins after its own stores, so this package's entry points provide the stores for
``http``, ``https`` and ``databricks``. Each is MLflow's own REST store class with
this mixin in front: for a run that is not open in a tracked run of this process,
every call goes to MLflow's implementation unchanged; for one that is, the calls that
write (metrics, params, tags, deleted tags, status) go to the run's spool and return
at once, and the calls that read or create (``get_run``, metric history, child runs,
inputs and outputs) go to the run's own server with the run's own credentials, after
the records pending for it are delivered.

So plain ``mlflow.log_metric`` and ``MlflowClient().log_batch`` calls take the spool's
path without any patching, ``mlflow.get_tracking_uri()`` still names the real server,
and a run lands on its own server even when another thread's tracked run has pointed
MLflow's process-wide tracking URI elsewhere.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from michelangelo_mlflow._state import STATE

if TYPE_CHECKING:
    from michelangelo_mlflow._logging.courier import RunSpool
    from michelangelo_mlflow._logging.delivery import Route

__all__ = [
    "artifacts_repository",
    "databricks_store",
    "http_store",
    "routing_to",
]

log = logging.getLogger("michelangelo_mlflow.spool")

READ_WAIT = 5.0
"""Seconds a read of an open run waits for its pending records to be delivered."""

PARENT_TAG = "mlflow.parentRunId"

_ROUTE: contextvars.ContextVar[Route | None] = contextvars.ContextVar(
    "michelangelo_mlflow_route", default=None
)
"""The server and credentials of the tracked run open in this context, if any."""

_TRACKED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "michelangelo_mlflow_tracked_run", default=None
)
"""The id of the innermost tracked run open in this context, once it exists."""


def http_store(store_uri: str, **_: Any) -> Any:
    """The ``http``/``https`` tracking store (MLflow's ``RestStore`` behind the spool)."""
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.credentials import get_default_host_creds

    return _build(RestStore, store_uri, get_default_host_creds)


def databricks_store(store_uri: str, **_: Any) -> Any:
    """The ``databricks`` tracking store (MLflow's Databricks REST store behind the spool)."""
    from mlflow.utils.databricks_utils import get_databricks_host_creds

    from michelangelo_mlflow._logging.delivery import databricks_base

    return _build(databricks_base(), store_uri, get_databricks_host_creds)


def artifacts_repository(artifact_uri: str, *args: Any, **kwargs: Any) -> Any:
    """The ``mlflow-artifacts`` repository (artifacts proxied by the tracking server).

    For a run open in a tracked run, an upload that cannot reach the server is kept in
    the run's spool and uploaded when it answers again, in order with the run's records.
    """
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    return _spooling_artifacts(MlflowArtifactsRepository)(artifact_uri, *args, **kwargs)


@functools.cache
def _spooling_artifacts(base: type) -> type:
    name = f"Spooling{base.__name__}"
    return type(name, (SpoolingArtifactsMixin, base), {"__module__": __name__})


class SpoolingArtifactsMixin:
    """Keep an artifact in the run's spool when the server is down, instead of failing."""

    artifact_uri: str

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        self._upload_or_keep("log_artifact", local_file, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        self._upload_or_keep("log_artifacts", local_dir, artifact_path)

    def _upload_or_keep(self, method: str, local: str, artifact_path: str | None) -> None:
        from michelangelo_mlflow._logging.delivery import is_transport_failure

        spool = _artifact_spool(self.artifact_uri)
        if spool is None or spool.answers():
            try:
                getattr(super(), method)(local, artifact_path)
                return
            except Exception as exc:
                if spool is None or not is_transport_failure(exc):
                    raise
        copy = spool.keep_artifact(local, artifact_path, self.artifact_uri)
        log.warning(
            "the tracking server at %s is not answering: %s is kept in the spool as %s and "
            "uploaded to run %s when it answers again",
            spool.route.tracking_uri, local, copy, spool.run_id,
        )  # fmt: skip


def _artifact_spool(artifact_uri: str) -> RunSpool | None:
    for spool in list(STATE.spools.values()):
        if f"/{spool.run_id}/artifacts" in artifact_uri:
            return spool
    return None


def _build(base: type, store_uri: str, default: Callable[[str], Any]) -> Any:
    store = _spooling(base)(functools.partial(_host_creds, store_uri, default))
    store.spool_uri = _safe(store_uri)
    return store


def _host_creds(store_uri: str, default: Callable[[str], Any]) -> Any:
    """The open tracked run's credentials for its own server; MLflow's reading otherwise."""
    route = _ROUTE.get()
    if route is not None and route.tracking_uri == _safe(store_uri):
        return route.host_creds()
    return default(store_uri)


@contextmanager
def routing_to(route: Route | None) -> Iterator[None]:
    """Make ``route`` this context's tracked run: its server gets its credentials."""
    token = _ROUTE.set(route)
    try:
        yield
    finally:
        _ROUTE.reset(token)


@contextmanager
def tracking(run_id: str) -> Iterator[None]:
    """Make ``run_id`` this context's tracked run: runs created here become its children."""
    token = _TRACKED.set(run_id)
    try:
        yield
    finally:
        _TRACKED.reset(token)


def _safe(uri: str) -> str:
    if uri == "databricks":
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=host, query="", fragment="").geturl()


@functools.cache
def _spooling(base: type) -> type:
    return type(f"Spooling{base.__name__}", (SpoolingStoreMixin, base), {"__module__": __name__})


def _spool(run_id: str) -> RunSpool | None:
    return STATE.spools.get(run_id)


def _writing(run_id: str) -> RunSpool | None:
    """The spool a write for ``run_id`` takes: the run's, or a Ray worker's for its driver's."""
    spool = STATE.spools.get(run_id)
    if spool is not None or not run_id:
        return spool
    if not _drivers_run(run_id):
        return None
    from michelangelo_mlflow._logging.opening import attached_spool

    return attached_spool(run_id)


class SpoolingStoreMixin:
    """Route the calls for runs open in a tracked run to their spool or their server.

    Every method falls through to MLflow's store when the run has no spool here.
    """

    # --- writes: spooled ---------------------------------------------------------------
    def log_metric(self, run_id: str, metric: Any) -> None:
        spool = _writing(run_id)
        if spool is None:
            return super().log_metric(run_id, metric)  # type: ignore[misc, no-any-return]
        spool.log_metric(metric)
        return None

    def log_param(self, run_id: str, param: Any) -> None:
        spool = _writing(run_id)
        if spool is None:
            return super().log_param(run_id, param)  # type: ignore[misc, no-any-return]
        spool.log(params=(param,))
        return None

    def set_tag(self, run_id: str, tag: Any) -> None:
        spool = _writing(run_id)
        if spool is None:
            return super().set_tag(run_id, tag)  # type: ignore[misc, no-any-return]
        spool.log(tags=(tag,))
        return None

    def log_batch(
        self, run_id: str, metrics: Sequence[Any], params: Sequence[Any], tags: Sequence[Any]
    ) -> None:
        spool = _writing(run_id)
        if spool is None:
            return super().log_batch(run_id, metrics, params, tags)  # type: ignore[misc, no-any-return]
        spool.log(metrics, params, tags)
        return None

    def delete_tag(self, run_id: str, key: str) -> None:
        spool = _writing(run_id)
        if spool is None:
            return super().delete_tag(run_id, key)  # type: ignore[misc, no-any-return]
        spool.delete_tag(key)
        return None

    def update_run_info(self, run_id: str, run_status: Any, end_time: Any, run_name: Any) -> Any:
        spool = _spool(run_id)
        if spool is None:
            if run_status is not None and _drivers_run(run_id):
                from mlflow.entities import RunStatus

                if RunStatus.is_terminated(run_status):
                    # A Ray worker (Lightning's finalize, mlflow.end_run) ending the run of
                    # the driver that started it: the driver's block decides its status.
                    log.info("run %s: a worker's status %s is not sent; the driver ends the run",
                             run_id, RunStatus.to_string(run_status))  # fmt: skip
                    return None
            return super().update_run_info(run_id, run_status, end_time, run_name)  # type: ignore[misc]
        from mlflow.entities import RunInfo, RunStatus

        status = RunStatus.to_string(run_status) if run_status is not None else None
        spool.update(status, end_time, run_name)
        run = spool.snapshot()
        if run is None:
            return None
        info = run.info
        return RunInfo(  # positional: MLflow 2 names the first run_uuid, MLflow 3 run_id
            info.run_id,
            experiment_id=info.experiment_id,
            user_id=info.user_id,
            status=status or info.status,
            start_time=info.start_time,
            end_time=end_time if end_time is not None else info.end_time,
            lifecycle_stage=info.lifecycle_stage,
            artifact_uri=info.artifact_uri,
            run_name=run_name or info.run_name,
        )

    # --- reads: the run's own server, after its pending records -------------------------
    def get_run(self, run_id: str) -> Any:
        spool = _writing(run_id)  # a Ray worker reads its driver's run through its spool
        if spool is None:
            return super().get_run(run_id)  # type: ignore[misc]
        from michelangelo_mlflow._logging.attach import apply_framework_settings

        apply_framework_settings(spool)
        run = spool.refresh(READ_WAIT) or spool.snapshot()
        if run is None:  # a worker's spool, never read from the server: MLflow's own read
            return super().get_run(run_id)  # type: ignore[misc]
        return run

    def get_metric_history(self, run_id: str, metric_key: str, *args: Any, **kwargs: Any) -> Any:
        spool = _spool(run_id)
        if spool is None:
            return super().get_metric_history(run_id, metric_key, *args, **kwargs)  # type: ignore[misc]
        spool.flush(READ_WAIT)
        return _direct(spool).get_metric_history(run_id, metric_key, *args, **kwargs)

    def _search_runs(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + READ_WAIT  # one wait for all open runs, not one each
        for spool in list(STATE.spools.values()):
            if not spool.outage_now():
                spool.flush(max(0.0, deadline - time.monotonic()))
        return super()._search_runs(*args, **kwargs)  # type: ignore[misc]

    # --- other calls about the run: its own server --------------------------------------
    def log_inputs(self, run_id: str, *args: Any, **kwargs: Any) -> Any:
        spool = _spool(run_id)
        if spool is None:
            return super().log_inputs(run_id, *args, **kwargs)  # type: ignore[misc]
        return _direct(spool).log_inputs(run_id, *args, **kwargs)

    def log_outputs(self, run_id: str, *args: Any, **kwargs: Any) -> Any:
        spool = _spool(run_id)
        if spool is None:
            return super().log_outputs(run_id, *args, **kwargs)  # type: ignore[misc]
        return _direct(spool).log_outputs(run_id, *args, **kwargs)

    def record_logged_model(self, run_id: str, *args: Any, **kwargs: Any) -> Any:
        spool = _spool(run_id)
        if spool is None:
            return super().record_logged_model(run_id, *args, **kwargs)  # type: ignore[misc]
        return _direct(spool).record_logged_model(run_id, *args, **kwargs)

    def create_run(
        self, experiment_id: str, user_id: str, start_time: int, tags: Any, run_name: Any
    ) -> Any:
        store_uri = getattr(self, "spool_uri", "")
        parent_id = _tag(tags, PARENT_TAG)
        tracked = _spool(_TRACKED.get() or "")
        if parent_id is None and tracked is not None and tracked.route.tracking_uri == store_uri:
            # A run created inside a tracked run on its server (a framework's own logger,
            # MlflowClient().create_run) becomes its child: it ends with the block.
            tags = [*(tags or ()), _run_tag(PARENT_TAG, tracked.run_id)]
            parent_id = tracked.run_id
        parent = _writing(parent_id or "")
        if parent is not None and store_uri in (parent.route.tracking_uri, _global_uri()):
            # A run nested under an open tracked run lives where its parent lives.
            from michelangelo_mlflow._logging.courier import open_child

            if parent.route.tracking_uri != store_uri:
                assert parent.run is not None
                experiment_id = parent.run.info.experiment_id  # the given one is another server's
            run = _direct(parent).create_run(experiment_id, user_id, start_time, tags, run_name)
            open_child(parent, run)
            return run
        route = _ROUTE.get()
        if route is not None and route.tracking_uri != store_uri and store_uri == _global_uri():
            # MLflow's process-wide URI is another thread's run's: this context's tracked
            # run is on another server, and a run created through the globals goes there.
            from michelangelo_mlflow._logging.delivery import direct_store

            store = direct_store(route.host_creds, databricks=route.databricks)
            return store.create_run(experiment_id, user_id, start_time, tags, run_name)
        return super().create_run(experiment_id, user_id, start_time, tags, run_name)  # type: ignore[misc]


def _drivers_run(run_id: str) -> bool:
    """Whether this process is a Ray worker started for the tracked run ``run_id``."""
    if "ray" not in sys.modules:  # no worker context outside Ray: nothing to read
        return False
    from michelangelo_mlflow._settings import driver_run_id

    return driver_run_id() == run_id


def _global_uri() -> str:
    import mlflow

    return _safe(mlflow.get_tracking_uri())


def _run_tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)


def _direct(spool: RunSpool) -> Any:
    return spool.direct_store()


def _tag(tags: Any, key: str) -> str | None:
    for tag in tags or ():
        if getattr(tag, "key", None) == key:
            return str(tag.value)
    return None
