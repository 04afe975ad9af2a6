"""Open a run's spool: where it lives, where it sends, on what terms; a worker's on first write.

The run layer (``tracking_run``, ``worker_run``) opens a spool with what this module
resolves from its settings: the directory (:func:`spool_directory`), the route to the
server with the run's own credentials (:func:`route_for`) and the terms
(:func:`spool_terms`). A Ray worker started with ``mm.ray.runtime_env()`` that
writes to the driver's run outside ``worker_run()`` gets the same spool from the store
plugins, on its first write (:func:`attached_spool`).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from michelangelo_mlflow._logging.closing import close_run
from michelangelo_mlflow._logging.courier import RunSpool, open_run
from michelangelo_mlflow._logging.delivery import Route
from michelangelo_mlflow._settings import Settings, WorkerContext, context_text
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    MichelangeloMlflowWarning,
)

__all__ = [
    "attached_spool",
    "deliver_rest",
    "host_creds",
    "route_for",
    "spool_directory",
    "spool_terms",
    "take_attached",
]

log = logging.getLogger("michelangelo_mlflow.spool")


def spool_directory(settings: Settings) -> Path | None:
    """The spool directory of a run on a remote server; ``None`` without a spool.

    It is not created here: the first record creates it. A path that cannot be a
    directory (a file in the way) is an error before any run exists; a directory that
    cannot be written now (a read-only or full file system) is not: the records are
    kept in memory and sent from there, as when the disk fills up during the run.
    """
    if settings.spool == "off" or not settings.is_remote:
        return None
    directory = Path.cwd() / settings.spool_dir
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(
            f"the spool directory {directory} (MICHELANGELO_MLFLOW_SPOOL_DIR) cannot be "
            f"created: {existing} is not a directory",
            variable="MICHELANGELO_MLFLOW_SPOOL_DIR",
            fix="point MICHELANGELO_MLFLOW_SPOOL_DIR at a writable directory (in a task pod, "
            "an emptyDir or persistent volume mount), or set MICHELANGELO_MLFLOW_SPOOL=off",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        warnings.warn(
            f"the spool directory {directory} (MICHELANGELO_MLFLOW_SPOOL_DIR) cannot be "
            f"written ({existing} is read-only or not writable by this user): this run's "
            "records are kept in memory and sent from there, and do not survive the process "
            "being killed; point MICHELANGELO_MLFLOW_SPOOL_DIR at a writable directory",
            MichelangeloMlflowWarning,
            stacklevel=4,
        )
    return directory


def spool_terms(settings: Settings) -> dict[str, Any]:
    """The size cap, secrets and flush interval a run's spool is opened with."""
    return {
        "max_bytes": int(settings.spool_max_bytes),
        "secrets": settings.secret_values(),
        "interval": settings.flush_interval,
    }


def host_creds(
    settings: Settings, *, uri: str | None = None, credentials: bool = True
) -> Callable[[], Any]:
    """The credentials of a run's server, fixed now from ``settings``.

    MLflow's own reading of its environment supplies what this SDK does not manage
    (client certificates, auth plugins); user, password, token and TLS verification
    come from ``settings``, so a run keeps its credentials whatever other threads set.

    Args:
        settings: The run's configuration.
        uri: Another server than the settings' (for a leftover of it).
        credentials: Send user, password and token (off for another server).
    """
    uri = uri or settings.effective_tracking_uri
    if uri.startswith("databricks"):
        from mlflow.utils.databricks_utils import get_databricks_host_creds

        return functools.partial(get_databricks_host_creds, uri)
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)  # type: ignore[no-untyped-call]
    basic = credentials and settings.credential_method == "basic"
    secret = {name: value.get_secret_value() if value else None for name, value in (
        ("username", settings.username if basic else None),
        ("password", settings.password if basic else None),
        ("token", settings.tracking_token if credentials else None),
    )}  # fmt: skip
    creds.username, creds.password, creds.token = (
        secret["username"],
        secret["password"],
        secret["token"],
    )
    creds.ignore_tls_verification = settings.insecure_tls
    creds.server_cert_path = str(settings.server_cert_path) if settings.server_cert_path else None
    return lambda: creds


def route_for(settings: Settings) -> Route:
    """Where a run's records go: its server, with its own credentials fixed now."""
    return Route(
        settings.safe_tracking_uri,
        host_creds(settings),
        timeout=min(30.0, max(5.0, settings.spool_grace / 3)),
        databricks=settings.scheme == "databricks",
        senders=settings.senders,
    )


def deliver_rest(spool: RunSpool, settings: Settings, who: str) -> None:
    """Deliver a worker's records of the run within the grace; warn about what is left."""
    grace = settings.spool_grace
    for outcome in close_run(spool, status=None, grace=grace):
        if outcome.delivered and outcome.error is None:
            continue
        where = spool.directory
        reason = outcome.error.message if outcome.error else outcome.outage or "no answer"
        warnings.warn(
            f"worker ({who}): records of run {spool.run_id} did not reach "
            f"{settings.safe_tracking_uri} within the {grace:g} s grace ({reason}); "
            f"they are kept in {where}: run `michelangelo-mlflow sync --spool {where}` on "
            "this node when the server is back",
            MichelangeloMlflowWarning,
            stacklevel=4,
        )


# --- a Ray worker's writes outside worker_run() --------------------------------------------


def attached_spool(run_id: str) -> RunSpool | None:
    """The spool of the driver's run in a Ray worker, opened by its first write to it.

    A process started with ``mm.ray.runtime_env()`` may write to the driver's run, or
    create a run under it, without ``worker_run()``: Ray's ``setup_mlflow``, Lightning's
    ``MLFlowLogger(run_id=...)`` pickled into Ray Train workers, a plain
    ``MlflowClient().log_metric``. The store plugins call this for such a write: the
    process opens the run's spool, as ``worker_run()`` does, so the write (and those of
    runs it creates under the driver's) takes the outage-proof path. The spool stays
    open until the process exits (or a ``worker_run()`` block takes it over and closes
    it); it lives in the driver's spool directory, where the driver's block end waits
    for a live worker's records or sends a killed worker's itself.

    Args:
        run_id: The run written to; only the driver's run of this process's context
            opens a spool.

    Returns:
        The spool, or ``None`` when this process does not spool that run's records (no
        worker context for it, the spool off, another server): the call then goes to
        MLflow unchanged.
    """
    key = (run_id, context_text())  # one context in a worker's life; many in a test's
    with STATE.lock:
        if key in STATE.attached:
            return STATE.attached[key]
        spool = None
        try:
            spool = _attach(run_id)
        except (MichelangeloMlflowError, OSError, ValueError) as exc:
            log.warning(
                "run %s: this worker's records go straight to the server, without a spool: %s",
                run_id, exc,
            )  # fmt: skip
        atexit.unregister(_close_attached)  # registered once, however often attached
        atexit.register(_close_attached)
        STATE.attached[key] = spool
        return spool


def _attach(run_id: str) -> RunSpool | None:
    settings = Settings()
    if settings.worker_context is None:
        return None
    context = WorkerContext.from_json(settings.worker_context)
    directory = spool_directory(settings)
    if (
        context.run_id != run_id
        or context.tracking_uri != settings.safe_tracking_uri
        or directory is None
        or run_id in STATE.spools
    ):
        return None
    route = route_for(settings)
    return open_run(
        directory,
        route,
        run_id,
        context.experiment_id,
        run=_as_known(context),
        role="worker",
        **spool_terms(settings),
    )


def _as_known(context: WorkerContext) -> Any:
    """The driver's run as the worker knows it before reading it.

    A read during an outage returns it, with this worker's records on top: MLflow's
    ``set_terminated`` reads the run to print its URL before it sends the status (which
    a worker's spool drops), and Lightning's ``finalize()`` calls it on rank 0.
    """
    from mlflow.entities import Run, RunData, RunInfo

    info = RunInfo(  # positional: MLflow 2 names the first run_uuid, MLflow 3 run_id
        context.run_id,
        experiment_id=context.experiment_id,
        user_id="",
        status="RUNNING",
        start_time=0,  # not in the context: unknown until the server answers
        end_time=None,
        lifecycle_stage="active",
    )
    return Run(info, RunData())


def take_attached(run_id: str) -> RunSpool | None:
    """The spool a write opened before a ``worker_run()`` block, now the block's to close."""
    with STATE.lock:
        spool = STATE.spools.get(run_id)
        for key, attached in list(STATE.attached.items()):
            if attached is not None and attached is spool:
                del STATE.attached[key]
                return spool
    return None


def _close_attached() -> None:
    """At exit: deliver what the writes outside ``worker_run()`` left, within the grace."""
    with STATE.lock:
        spools = [s for s in STATE.attached.values() if s is not None]
        STATE.attached.clear()
    spools = [s for s in spools if STATE.spools.get(s.run_id) is s and s.pid == os.getpid()]
    if spools:
        settings = Settings()  # the same environment the spools were opened from
        for spool in spools:
            deliver_rest(spool, settings, f"pid {spool.pid}")
