"""Point MLflow's process globals at one configuration, and put them back afterwards.

MLflow keeps its configuration in process globals: the tracking and registry URIs
and a handful of environment variables it reads on every request (credentials, TLS,
the HTTP retry budget, ``MLFLOW_RUN_ID``). :func:`mlflow_scope` is the one place that
sets them, for the duration of a run or a registration, and restores every one of
them on exit, so that secrets never outlive the scope in ``os.environ`` and two
sequential runs against different servers each land on their own server.

The globals are process-wide: scopes on several threads at once must share one
configuration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from michelangelo_mlflow._errors import import_mlflow
from michelangelo_mlflow._settings import Settings

__all__ = ["mlflow_environment", "mlflow_scope", "set_active_experiment"]


def mlflow_environment(settings: Settings) -> dict[str, str | None]:
    """The MLflow environment variables a scope sets (``None``: unset).

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
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.http_max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(settings.http_backoff_factor),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(settings.http_timeout)),
        # Never resume someone else's run: resuming takes an explicit run_id=.
        "MLFLOW_RUN_ID": None,
    }


@contextmanager
def mlflow_scope(settings: Settings) -> Iterator[None]:
    """Set MLflow's tracking URI, registry URI and environment for the block.

    Args:
        settings: The resolved configuration.

    Yields:
        Nothing; MLflow's fluent API and ``MlflowClient()`` use ``settings`` inside.

    Raises:
        MissingDependencyError: MLflow cannot be imported.
    """
    import_mlflow()  # a missing or broken MLflow install: MissingDependencyError
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    environment = mlflow_environment(settings)
    saved_env = {name: os.environ.get(name) for name in environment}
    saved_tracking_uri = tracking_utils._tracking_uri
    saved_registry_uri: str | None = registry_utils._registry_uri
    saved_experiment_id: str | None = fluent._active_experiment_id
    try:
        _apply(environment)
        _set_tracking_uri(environment["MLFLOW_TRACKING_URI"])
        vars(registry_utils)["_registry_uri"] = settings.registry_uri  # a module global
        set_active_experiment(None)  # one set for another server must not leak in
        yield
    finally:
        _set_tracking_uri(saved_tracking_uri)
        vars(registry_utils)["_registry_uri"] = saved_registry_uri
        set_active_experiment(saved_experiment_id)
        _apply(saved_env)


def set_active_experiment(experiment_id: str | None) -> None:
    """Set MLflow's active experiment (what ``mlflow.set_experiment`` sets) for the scope.

    Runs the block starts with plain ``mlflow.start_run(nested=True)`` then land in
    the tracked run's experiment rather than in experiment 0.
    """
    from mlflow.tracking import fluent

    vars(fluent)["_active_experiment_id"] = experiment_id


def _set_tracking_uri(uri: str | None) -> None:
    import mlflow

    # set_tracking_uri(None) also deletes MLFLOW_TRACKING_URI; _apply restores it after.
    mlflow.set_tracking_uri(uri)  # type: ignore[arg-type]


def _apply(environment: dict[str, str | None]) -> None:
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
