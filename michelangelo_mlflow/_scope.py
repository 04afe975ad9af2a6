"""Point MLflow's process globals at one configuration, and put them back afterwards.

MLflow keeps its configuration in process globals: the tracking and registry URIs,
the active experiment and a handful of environment variables it reads on every
request (credentials, TLS, the HTTP retry budget, ``MLFLOW_RUN_ID``).
:func:`mlflow_scope` is the one place that sets them, for the duration of a run or a
registration, and restores every one of them when the last scope using them ends,
so that secrets never outlive a run in ``os.environ``.

Scopes are counted across threads (the record lives in ``STATE``):

- ``applied``: no scope held the globals, or only scopes of this same thread (a
  nested scope): this one sets them, and puts back what it found when it ends;
- ``shared``: scopes of other threads hold the globals with the same configuration:
  this one uses them, and the last scope to end restores what the first found;
- ``routed``: scopes of other threads hold them with another configuration (another
  server or other credentials). The globals are left alone; a tracked run in this
  scope still lands on its own server with its own credentials, because every call
  about the run goes through its spool and this SDK's tracking store, which route by
  run. What only MLflow's globals decide (``mlflow.get_tracking_uri()``, artifact
  uploads and models logged with the fluent API, registry calls) follows the other
  configuration while both are open; :class:`~michelangelo_mlflow._run.TrackingRun`
  warns about that, and refuses the combination when no spool can route the run.
  When the scopes holding the globals end first, they are handed to the waiting
  routed scope (its configuration is applied) rather than restored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from michelangelo_mlflow._dependencies import import_mlflow
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._state import STATE, Holder, hold, let_go

__all__ = [
    "ScopeMode",
    "holder_description",
    "mlflow_environment",
    "mlflow_scope",
    "registry_uri_for",
    "set_active_experiment",
]

ScopeMode = Literal["applied", "shared", "routed"]

_Saved = tuple[dict[str, str | None], str | None, str | None, str | None]
"""MLflow's globals as a scope found them: environment, tracking, registry, experiment."""

_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "DATABRICKS_HOST",
    "DATABRICKS_TOKEN",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_ALLOW_FILE_STORE",
    "MLFLOW_RUN_ID",
)
"""Every variable a scope may set; all of them are saved and restored together."""


def mlflow_environment(settings: Settings) -> dict[str, str | None]:
    """The MLflow environment variables a scope sets (``None``: unset).

    The HTTP retry budget is included only when this SDK chooses one (see
    ``Settings.http_budget``); otherwise MLflow's own is left as it is.

    Args:
        settings: The resolved configuration.

    Returns:
        Variable name to value; secrets included, so never log the result.
    """

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    basic = settings.credential_method == "basic"
    return {
        "MLFLOW_TRACKING_URI": settings.effective_tracking_uri,
        "MLFLOW_TRACKING_USERNAME": secret(settings.username) if basic else None,
        "MLFLOW_TRACKING_PASSWORD": secret(settings.password) if basic else None,
        "MLFLOW_TRACKING_TOKEN": secret(settings.tracking_token),
        "MLFLOW_TRACKING_INSECURE_TLS": "true" if settings.insecure_tls else None,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": (
            str(settings.server_cert_path) if settings.server_cert_path else None
        ),
        "DATABRICKS_HOST": settings.databricks_host,
        "DATABRICKS_TOKEN": secret(settings.databricks_token),
        **settings.http_budget(),
        "MLFLOW_ALLOW_FILE_STORE": "true" if settings.allow_file_store else None,
        # Never resume someone else's run: resuming takes an explicit run_id=.
        "MLFLOW_RUN_ID": None,
    }


@contextmanager
def mlflow_scope(settings: Settings) -> Iterator[ScopeMode]:
    """Set MLflow's tracking URI, registry URI and environment for the block.

    Args:
        settings: The resolved configuration.

    Yields:
        How the block relates to MLflow's globals: ``applied``, ``shared`` or
        ``routed`` (see the module docstring).

    Raises:
        MissingDependencyError: MLflow cannot be imported.
    """
    import_mlflow()  # a missing or broken MLflow install: MissingDependencyError
    environment = mlflow_environment(settings)
    registry_uri = registry_uri_for(settings)
    key = (tuple(sorted(environment.items())), registry_uri, settings.safe_tracking_uri)
    holder, applied = hold(STATE.globals_stack, key, _save, lambda: _apply_key(key), _restore)
    waiter = _Waiter(key, threading.get_ident()) if holder is None else None
    if waiter is not None:
        with STATE.lock:
            STATE.globals_waiting.append(waiter)
    mode: ScopeMode = "routed" if holder is None else "applied" if applied else "shared"
    try:
        yield mode
    finally:
        if holder is not None:
            let_go(STATE.globals_stack, holder, _restore_or_hand_over)
        elif waiter is not None:
            _stop_waiting(waiter)


@dataclass
class _Waiter:
    """A routed scope: its configuration, applied when the scopes holding another end."""

    key: tuple[Any, ...]
    thread: int
    holder: Holder[_Saved] | None = None


def _apply_key(key: tuple[Any, ...]) -> None:
    _apply(dict(key[0]), key[1])


def _restore_or_hand_over(saved: _Saved) -> None:
    """The last scope holding the globals ended: hand them to a routed scope, or restore."""
    with STATE.lock:
        waiting: list[_Waiter] = STATE.globals_waiting
        if not waiting:
            _restore(saved)
            return
        key = waiting[0].key
        holder: Holder[_Saved] = Holder(key, saved)
        _apply_key(key)
        STATE.globals_stack.append(holder)
        for waiter in [w for w in waiting if w.key == key]:
            waiting.remove(waiter)
            waiter.holder = holder
            holder.users[waiter.thread] += 1


def _stop_waiting(waiter: _Waiter) -> None:
    with STATE.lock:
        if waiter.holder is None:
            STATE.globals_waiting.remove(waiter)
            return
    let_go(STATE.globals_stack, waiter.holder, _restore_or_hand_over)


def registry_uri_for(settings: Settings) -> str | None:
    """The registry URI a scope sets: ``MLFLOW_REGISTRY_URI``, else the tracking URI.

    The tracking URI is MLflow's own default registry for every server but Databricks
    (whose default, Unity Catalog, MLflow resolves itself: ``None`` leaves it to MLflow).
    Setting it explicitly also spares every ``MlflowClient()`` (two per
    ``mlflow.log_metric``) MLflow's search for a Spark session, a failed import of
    ``pyspark`` that costs about two thirds of a logging call.
    """
    if settings.registry_uri is not None:
        return settings.registry_uri
    return None if settings.scheme == "databricks" else settings.effective_tracking_uri


def holder_description() -> str:
    """Which tracking URI MLflow's globals point at, for messages; empty when none."""
    with STATE.lock:
        stack = STATE.globals_stack
        return str(stack[-1].key[-1]) if stack else ""


def _restore(saved: _Saved) -> None:
    environment, tracking_uri, registry_uri, experiment_id = saved
    _set_tracking_uri(tracking_uri)
    _set_registry_uri(registry_uri)
    set_active_experiment(experiment_id)
    _set_environment(environment)


def set_active_experiment(experiment_id: str | None) -> None:
    """Set MLflow's active experiment (what ``mlflow.set_experiment`` sets) for the scope.

    Runs the block starts with plain ``mlflow.start_run(nested=True)`` then land in
    the tracked run's experiment rather than in experiment 0.
    """
    from mlflow.tracking import fluent

    vars(fluent)["_active_experiment_id"] = experiment_id


def _save() -> _Saved:
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (
        {name: os.environ.get(name) for name in _VARIABLES},
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        fluent._active_experiment_id,
    )


def _apply(environment: dict[str, str | None], registry_uri: str | None) -> None:
    _set_environment({name: environment.get(name) for name in _VARIABLES if name in environment})
    _set_tracking_uri(environment["MLFLOW_TRACKING_URI"])
    _set_registry_uri(registry_uri)
    set_active_experiment(None)  # one set for another server must not leak in


def _set_tracking_uri(uri: str | None) -> None:
    import mlflow

    # set_tracking_uri(None) also deletes MLFLOW_TRACKING_URI; the environment is set after.
    mlflow.set_tracking_uri(uri)  # type: ignore[arg-type]


def _set_registry_uri(uri: str | None) -> None:
    from mlflow.tracking._model_registry import utils as registry_utils

    vars(registry_utils)["_registry_uri"] = uri  # a module global


def _set_environment(environment: dict[str, str | None]) -> None:
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
