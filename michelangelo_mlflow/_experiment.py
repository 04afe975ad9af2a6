"""Resolve the experiment of a run: by name (created when missing) or by id.

One function, used by tracked runs and by ``michelangelo-mlflow doctor --artifacts``:
a missing experiment is created (a concurrent creation by another task is taken as
found), a deleted one is a :class:`ConfigurationError` that says how to restore it,
and an ``MLFLOW_EXPERIMENT_ID`` that names nothing says what to set instead.

The id is looked up again for every run (one request): a cached id would send a run
into another experiment after the server was restarted on a fresh database and the
id reused, and a lookup by name costs the same request as checking a cached id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import ConfigurationError

if TYPE_CHECKING:
    from mlflow.entities import Experiment
    from mlflow.tracking import MlflowClient

__all__ = ["experiment_id"]

_MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def experiment_id(client: MlflowClient, settings: Settings, name: str | None) -> str:
    """The id of the experiment named ``name`` (else the settings'), created when missing.

    Args:
        client: A client of the run's tracking server.
        settings: Supplies ``MLFLOW_EXPERIMENT_NAME``/``_ID`` and the default name.
        name: The experiment asked for by the caller, if any.

    Returns:
        The experiment's id.

    Raises:
        ConfigurationError: The experiment is deleted, or ``MLFLOW_EXPERIMENT_ID``
            names no experiment.
    """
    name = name or settings.experiment_name
    by_id = name is None and settings.experiment_id is not None
    if by_id:
        experiment: Experiment | None = _by_id(client, settings)
    else:
        name = name or settings.default_experiment
        experiment = client.get_experiment_by_name(name)
    if experiment is None:
        found = _create(client, name or settings.default_experiment, settings)
    else:
        _check_active(experiment, settings)
        found = str(experiment.experiment_id)
    return found


def _by_id(client: MlflowClient, settings: Settings) -> Experiment:
    from mlflow.exceptions import MlflowException

    assert settings.experiment_id is not None
    try:
        return client.get_experiment(settings.experiment_id)
    except MlflowException as exc:
        if exc.error_code not in _MISSING:
            raise
        raise ConfigurationError(
            f"MLFLOW_EXPERIMENT_ID={settings.experiment_id} names no experiment on "
            f"{settings.safe_tracking_uri}",
            variable="MLFLOW_EXPERIMENT_ID",
            fix="set it to an existing experiment's id, or set MLFLOW_EXPERIMENT_NAME "
            "instead (a missing experiment is created by name)",
        ) from exc


def _create(client: MlflowClient, name: str, settings: Settings) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.create_experiment(name))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    experiment = client.get_experiment_by_name(name)  # created concurrently by another task
    assert experiment is not None, f"experiment {name!r} exists and cannot be found"
    _check_active(experiment, settings)
    return str(experiment.experiment_id)


def _check_active(experiment: Experiment, settings: Settings) -> None:
    if experiment.lifecycle_stage == "deleted":
        raise ConfigurationError(
            f"MLflow experiment {experiment.name!r} on {settings.safe_tracking_uri} is deleted",
            variable="experiment",
            fix="restore it (mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}) or use another experiment name",
        )
