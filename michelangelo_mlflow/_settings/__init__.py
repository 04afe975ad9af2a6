"""Settings: the only place that reads the environment.

One pydantic-settings model, :class:`Settings`, validated up front. Its parts, one a
module, in the order a value passes through them:

- ``_sources``: the declared sources (keyword arguments, then the environment), the
  alias generator naming this SDK's variables, the record of where each value came
  from, :meth:`Settings.describe`, and pydantic's errors turned into ours;
- ``_uri``: the tracking URI's form;
- ``_model``: the fields, and :meth:`Settings._resolve`, which runs the checks;
- ``_stores``: MLflow's local default store, and local or pod stores refused;
- ``_credentials``: exactly one credential method, complete; the API server's address;
- ``_budget``: MLflow's HTTP retry variables while a run is open;
- ``_warnings``: warnings shown at the user's line;
- ``_context``: the driver's run as Ray workers receive it.

This module only re-exports.
"""

from __future__ import annotations

from michelangelo_mlflow._settings._context import (
    CONTEXT_VARIABLE,
    FIX_PROPAGATE,
    WorkerContext,
    context_text,
    driver_run_id,
)
from michelangelo_mlflow._settings._model import (
    DEFAULT_EXPERIMENT,
    CredentialMethod,
    OnRetry,
    PipelineRunMode,
    RegistryBackendName,
    Settings,
    SpoolMode,
    VersionPolicy,
    all_variables,
    variables_of,
)
from michelangelo_mlflow._settings._sources import PREFIX, SettingSource

__all__ = [
    "CONTEXT_VARIABLE",
    "DEFAULT_EXPERIMENT",
    "FIX_PROPAGATE",
    "PREFIX",
    "CredentialMethod",
    "OnRetry",
    "PipelineRunMode",
    "RegistryBackendName",
    "SettingSource",
    "Settings",
    "SpoolMode",
    "VersionPolicy",
    "WorkerContext",
    "all_variables",
    "context_text",
    "driver_run_id",
    "variables_of",
]
