"""Settings: the only place that reads the environment.

Values come from two declared sources, in this order (the first that has a value wins),
then from the field's default:

1. the keyword arguments of ``Settings(...)`` (``None``, and a blank tracking URI, mean
   "not given");
2. the environment variables named in the field's ``validation_alias``, in order. This
   SDK's own variables are named by an alias generator: ``MICHELANGELO_MLFLOW_`` plus
   the field name in upper case.

The sources are declared in :meth:`Settings.settings_customise_sources`; the
environment is read once, by pydantic-settings' own environment source. Each source
records which field it supplied under which name, and that record travels with the
values into validation: :meth:`Settings.describe` and the error messages are derived
from it ("argument", the variable's name, or "default").

Invalid values raise :class:`~michelangelo_mlflow.exceptions.ConfigurationError` naming
where the value came from; the one place that turns pydantic's ``ValidationError`` into
it is the metaclass' ``__call__`` (pydantic wraps every ``ValueError`` raised during
validation, so the translation has to happen around the constructor).

MLflow's local default store (no tracking URI anywhere) is resolved when the object is
built, without importing MLflow, by the rule of the installed client:
``sqlite:///<cwd>/mlflow.db`` (MLflow 3.7 and later), unless ``./mlruns`` already holds
experiments (a digit-named folder with a ``meta.yaml``), then the ``file:`` store
``<cwd>/mlruns``; MLflow before 3.7: always ``<cwd>/mlruns``.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import pathname2url

from packaging.version import InvalidVersion, Version
from pydantic import (
    AliasChoices,
    AliasGenerator,
    ByteSize,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowWarning

if TYPE_CHECKING:
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMetaclass
else:
    _ModelMetaclass = type(BaseSettings)

PREFIX = "MICHELANGELO_MLFLOW_"
"""Prefix of this SDK's own environment variables."""

DEFAULT_EXPERIMENT = "Default"
"""The experiment used when neither an argument nor ``MLFLOW_EXPERIMENT_*`` names one."""

CredentialMethod = Literal["none", "basic", "token", "databricks"]
VersionPolicy = Literal["strict", "warn", "off"]
RegistryBackendName = Literal["auto", "apiserver", "kubernetes", "manifest", "off"]
OnRetry = Literal["new", "resume"]
PipelineRunMode = Literal["off", "nested"]
SpoolMode = Literal["on", "off"]

_RENAMED = {
    "preflight": "preflight_enabled",
    "registry": "registry_backend",
    "pipeline_run": "pipeline_run_mode",
}
"""Deprecated attribute and keyword names, and the field each one now is."""

_ORIGINS = "__michelangelo_mlflow_origins__"
"""Key under which the sources pass {field: "argument" or variable} to validation."""

_HTTP = frozenset({"http", "https"})
_DATABASES = frozenset({"postgresql", "mysql", "mssql"})  # sqlite is a local store
_SUPPORTED = (
    "http://<host>[:<port>]",
    "https://<host>[:<port>]",
    "databricks",
    "databricks://<profile>",
    "sqlite:///<path>",
    "file:///<path>",
    "postgresql://",
    "mysql://",
    "mssql://",
    "a local path",
)
_HOST_PORT = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):\d+(?:/.*)?"
)
_API_SERVER = re.compile(
    r"(?:grpc://|dns:///)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>\d+))?"
)
_EXAMPLE_URI = "http://mlflow.example.com:5000"
_SET_THE_URI = (
    f'set it in the workflow code before the first tracked run, mlflow.set_tracking_uri("'
    f'{_EXAMPLE_URI}") or mm.Settings(tracking_uri="{_EXAMPLE_URI}"), or pass it when '
    f"submitting the pipeline: ma pipeline dev-run -f pipeline.yaml --env "
    f"MLFLOW_TRACKING_URI={_EXAMPLE_URI}"
)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _ours(name: str) -> AliasChoices:
    return AliasChoices(PREFIX + name)


def _our_variable(field_name: str) -> AliasChoices:
    """The alias generator: ``spool_dir`` reads ``MICHELANGELO_MLFLOW_SPOOL_DIR``."""
    return _ours(field_name.upper())


@dataclass(frozen=True)
class SettingSource:
    """Where one resolved setting came from, for ``michelangelo-mlflow config``.

    Attributes:
        name: The field name on :class:`Settings`.
        value: The value, with secrets shown as ``**********``.
        source: ``"argument"``, the environment variable's name, or ``"default"``.
        variables: Every environment variable the field reads, in precedence order.
    """

    name: str
    value: str
    source: str
    variables: tuple[str, ...]


class _ErrorBoundary(_ModelMetaclass):
    """Turns the ``ValidationError`` of ``Settings(...)`` into a ``ConfigurationError``.

    pydantic wraps every ``ValueError`` raised while validating (ours included) into a
    ``ValidationError``; this is the one place, around the constructor, that unwraps it.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise _translate(exc, {}) from None


class Settings(BaseSettings, metaclass=_ErrorBoundary):
    """Resolved, validated configuration for tracking runs and registering models.

    Construct it with no arguments to read the environment, or pass keyword
    arguments to override single values (``None`` means "not given"). Invalid or
    contradictory values raise :class:`~michelangelo_mlflow.exceptions.ConfigurationError`
    naming the argument or variable they came from and the fix. Secrets are
    ``SecretStr``; a ``user:password@`` in an http(s) tracking URI is moved into the
    basic-auth fields, so no credential appears in the URI, ``repr``, ``model_dump()``
    or :meth:`describe`.

    Tracking URI precedence: argument > ``MLFLOW_TRACKING_URI`` > ``TRACKING_URI``
    (the ``michelangelo-config`` ConfigMap key) > MLflow's local default, which is
    refused inside a remote task pod (``UF_REMOTE_RUN=1``) because the pod's disk
    is deleted with the pod.

    Example:
        >>> s = Settings(tracking_uri="http://mlflow.example.com:5000", namespace="ml-team")
        >>> s.safe_tracking_uri
        'http://mlflow.example.com:5000'
        >>> next(r.source for r in s.describe() if r.name == "tracking_uri")
        'argument'
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
        hide_input_in_errors=True,
        alias_generator=AliasGenerator(validation_alias=_our_variable),
    )

    # --- MLflow's own variables ---------------------------------------------------
    tracking_uri: str | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_URI", "TRACKING_URI"),
        description="Where runs are tracked. Unset or blank: MLflow's local default "
        "(refused in a remote task pod).",
    )
    registry_uri: str | None = Field(
        None,
        validation_alias=_env("MLFLOW_REGISTRY_URI"),
        description="MLflow Model Registry URI; unset means the tracking URI.",
    )
    experiment_name: str | None = Field(
        None,
        validation_alias=_env("MLFLOW_EXPERIMENT_NAME"),
        description=f'Experiment of new runs; default "{DEFAULT_EXPERIMENT}".',
    )
    experiment_id: str | None = Field(
        None,
        validation_alias=_env("MLFLOW_EXPERIMENT_ID"),
        description="Experiment of new runs, by id; used when no name is given.",
    )
    inherited_run_id: str | None = Field(
        None,
        validation_alias=_env("MLFLOW_RUN_ID"),
        description="Read only to make sure it is never resumed silently: pass run_id= "
        "to resume a run.",
    )
    tracking_username: SecretStr | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_USERNAME"),
        description="HTTP basic auth user (with MLFLOW_TRACKING_PASSWORD), or the user "
        "moved out of an http(s) tracking URI.",
    )
    tracking_password: SecretStr | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_PASSWORD"),
        description="HTTP basic auth password (with MLFLOW_TRACKING_USERNAME), or the "
        "password moved out of an http(s) tracking URI.",
    )
    tracking_token: SecretStr | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_TOKEN"),
        description="Bearer token for the tracking server.",
    )
    insecure_tls: bool = Field(
        False,
        validation_alias=_env("MLFLOW_TRACKING_INSECURE_TLS"),
        description="Skip TLS certificate verification (warns).",
    )
    server_cert_path: Path | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_SERVER_CERT_PATH"),
        description="CA bundle that verifies the tracking server's certificate.",
    )
    databricks_host: str | None = Field(
        None,
        validation_alias=_env("DATABRICKS_HOST"),
        description="Databricks workspace URL, for MLFLOW_TRACKING_URI=databricks.",
    )
    databricks_token: SecretStr | None = Field(
        None,
        validation_alias=_env("DATABRICKS_TOKEN"),
        description="Databricks personal access token, for MLFLOW_TRACKING_URI=databricks.",
    )
    allow_file_store: bool = Field(
        False,
        validation_alias=_env("MLFLOW_ALLOW_FILE_STORE"),
        description="MLflow 3.13+ refuses a file: store (or a plain path) unless this is "
        "true; without it such a tracking URI is refused up front.",
    )

    # --- Michelangelo's variables ---------------------------------------------------
    namespace: str | None = Field(
        None,
        validation_alias=_env("MA_NAMESPACE"),
        description="Michelangelo project (Kubernetes namespace); set in task pods.",
    )
    pipeline_run_name: str | None = Field(
        None,
        validation_alias=_env("MA_PIPELINE_RUN_NAME"),
        description="Michelangelo pipeline run; set in task pods.",
    )
    remote_run: bool = Field(
        False,
        validation_alias=_env("UF_REMOTE_RUN"),
        description="1 in a remote uniflow task pod (Ray, Spark).",
    )
    local_run: bool = Field(
        False,
        validation_alias=_env("UF_LOCAL_RUN"),
        description="1 in a local uniflow run.",
    )
    api_server: str | None = Field(
        None,
        validation_alias=_env("MA_API_SERVER"),
        description="Michelangelo API server host[:port] (optional grpc:// or dns:/// "
        "prefix), for the apiserver registry backend.",
    )
    api_server_name: str = Field(
        "ma-apiserver",
        validation_alias=_env("MA_API_SERVER_NAME"),
        description="Value of the rpc-service header sent to the Michelangelo API server.",
    )
    kubeconfig: str | None = Field(
        None,
        validation_alias=_env("KUBECONFIG"),
        description="Kubeconfig path(s), for the kubernetes registry backend.",
    )
    kubernetes_service_host: str | None = Field(
        None,
        validation_alias=_env("KUBERNETES_SERVICE_HOST"),
        description="Set by Kubernetes inside a pod; means in-cluster credentials exist.",
    )

    # --- This SDK's own knobs: MICHELANGELO_MLFLOW_<FIELD NAME> ---------------------
    default_experiment: str = Field(
        DEFAULT_EXPERIMENT,
        description="Experiment used when no argument or MLFLOW_EXPERIMENT_* names one.",
    )
    preflight_enabled: bool = Field(
        True,
        validation_alias=_ours("PREFLIGHT"),  # the variable kept its name (was `preflight`)
        description="Check reachability, credentials and versions before the first run. "
        "Formerly Settings.preflight.",
    )
    preflight_timeout: float = Field(
        2.0,
        gt=0,
        description="Connect and read timeout of one preflight request, in seconds.",
    )
    preflight_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Attempts of one preflight check before it fails.",
    )
    preflight_deadline: float = Field(
        4.5,
        gt=0,
        description="Seconds all preflight attempts together may take.",
    )
    version_policy: VersionPolicy = Field(
        "warn",
        description="Client/server version skew: strict raises, warn warns once, off skips.",
    )
    http_max_retries: int | None = Field(
        None,
        ge=0,
        le=10,
        description="MLflow's HTTP retries while a run is open (0-10). Unset: derived "
        "from spool_grace with the spool on, MLflow's default (7) with it off.",
    )
    http_backoff_factor: int | None = Field(
        None,
        ge=0,
        description="MLflow's HTTP backoff factor while a run is open. Unset: 1 with the "
        "spool on, MLflow's default (2) with it off.",
    )
    http_timeout: float | None = Field(
        None,
        gt=0,
        description="MLflow's per-request timeout in seconds while a run is open. Unset: "
        "spool_grace within 10-120 with the spool on, MLflow's default (120) with it off.",
    )
    registry_backend: RegistryBackendName = Field(
        "auto",
        validation_alias=_ours("REGISTRY"),  # the variable kept its name (was `registry`)
        description="Michelangelo Model backend: auto, apiserver, kubernetes, manifest, off. "
        "Formerly Settings.registry.",
    )
    manifest_dir: str = Field(
        "./michelangelo-models",
        description="Where the manifest backend writes Model YAML; - for stdout.",
    )
    api_server_tls: bool = Field(
        False,
        description="Use TLS to the Michelangelo API server.",
    )
    caller: str = Field(
        "michelangelo-mlflow",
        description="Value of the rpc-caller header sent to the Michelangelo API server.",
    )
    register_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds register_model waits for an MLflow model version to be READY.",
    )
    on_retry: OnRetry = Field(
        "new",
        description="A retried task gets a new run (new) or reopens its unfinished one (resume).",
    )
    pipeline_run_mode: PipelineRunMode = Field(
        "off",
        validation_alias=_ours("PIPELINE_RUN"),  # the variable kept its name (was `pipeline_run`)
        description="nested: one parent run per pipeline run, task runs nested under it. "
        "Formerly Settings.pipeline_run.",
    )
    worker_context: str | None = Field(
        None,
        description="Set by michelangelo_mlflow.ray in Ray workers' runtime env: the "
        "driver's run to attach to (JSON; no secrets). Not set by hand.",
    )
    allow_local_store: bool = Field(
        False,
        description="Let a remote task pod (UF_REMOTE_RUN=1) track into an explicit "
        "pod-local store (sqlite:, file:, a path), for a volume that outlives the pod.",
    )
    spool: SpoolMode = Field(
        "on",
        description='Write-ahead spool of run records: "on" (default) or "off".',
    )
    spool_dir: Path = Field(
        Path(".michelangelo-mlflow-spool"),
        description="Spool directory (default .michelangelo-mlflow-spool); a relative "
        "path is relative to the working directory when the run starts.",
    )
    spool_grace: float = Field(
        30.0,
        gt=0,
        description="Seconds a run's end waits without the server taking any of the "
        "remaining spooled records before it gives up (at most 10 graces in all while "
        "the server keeps taking them; default 30.0).",
    )
    spool_max_bytes: ByteSize = Field(
        ByteSize(1 << 30),  # 1GiB
        ge=1 << 20,
        description="Largest size of one run's undelivered records in the spool, per "
        "writing process (default 1GiB, at least 1MiB; accepts 512MiB, 2GB, ...); past it "
        "the oldest metric points are dropped.",
    )
    flush_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between background sends of spooled records (default 1.0, "
        "at most 60).",
    )

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _local_default: str | None = PrivateAttr(default=None)
    _store_userinfo: SecretStr | None = PrivateAttr(default=None)

    # --- sources -------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first, then the environment; no dotenv or secrets files.

        The environment is the snapshot pydantic-settings' own environment source took;
        it is not read a second time.
        """
        given = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        environ = env_settings.env_vars if isinstance(env_settings, EnvSettingsSource) else {}
        return _Arguments(settings_cls, given), _Environment(settings_cls, environ)

    # --- validation ----------------------------------------------------------------
    @model_validator(mode="wrap")
    @classmethod
    def _resolve(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        if not isinstance(data, dict):
            return handler(data)
        data = dict(data)
        origins: dict[str, str] = dict(data.pop(_ORIGINS, None) or {})
        for name in cls.model_fields:  # Settings.model_validate({...}): given as arguments
            if name not in origins and _key_of(data, name) is not None:
                origins[name] = "argument"
        store_userinfo = _prepare_tracking_uri(data, origins)
        try:
            settings = handler(data)
        except ValidationError as exc:
            raise _translate(exc, origins) from None
        settings._origins = origins
        settings._store_userinfo = store_userinfo
        if settings.tracking_uri is None:
            settings._local_default = _mlflow_local_default()
        _check_store(settings, _where(origins, "tracking_uri"))
        _check_credentials(settings, _where(origins, "tracking_uri"))
        _check_api_server(settings.api_server)
        return settings

    # --- deprecated names ----------------------------------------------------------
    @property
    def preflight(self) -> bool:
        """Deprecated name of :attr:`preflight_enabled` (warns ``DeprecationWarning``)."""
        _warn_renamed("preflight")
        return self.preflight_enabled

    @property
    def registry(self) -> RegistryBackendName:
        """Deprecated name of :attr:`registry_backend` (warns ``DeprecationWarning``)."""
        _warn_renamed("registry")
        return self.registry_backend

    @property
    def pipeline_run(self) -> PipelineRunMode:
        """Deprecated name of :attr:`pipeline_run_mode` (warns ``DeprecationWarning``)."""
        _warn_renamed("pipeline_run")
        return self.pipeline_run_mode

    # --- derived values ------------------------------------------------------------
    @property
    def uri_is_set(self) -> bool:
        """Whether a tracking URI was given (otherwise MLflow's local default applies)."""
        return self.tracking_uri is not None

    @property
    def effective_tracking_uri(self) -> str:
        """The tracking URI MLflow is pointed at: the given one, or MLflow's local default.

        http(s) credentials are not in it (they travel as ``MLFLOW_TRACKING_USERNAME``
        and ``..._PASSWORD``); a database URI keeps its own ``user:password@``, which
        its driver needs. Never show it: use :attr:`safe_tracking_uri`. The local
        default was resolved when these settings were built (see the module docs).
        """
        if self.tracking_uri is None:
            return self._local_default or _mlflow_local_default()
        if self._store_userinfo is not None:
            userinfo = self._store_userinfo.get_secret_value()
            return self.tracking_uri.replace("://", f"://{userinfo}@", 1)
        return self.tracking_uri

    @property
    def safe_tracking_uri(self) -> str:
        """The tracking URI as it may be shown anywhere: no credentials, no query."""
        uri = self.tracking_uri if self.tracking_uri is not None else self.effective_tracking_uri
        parts = urlsplit(uri)
        if not parts.query and not parts.fragment:
            return uri  # urlunsplit would turn sqlite:/// into sqlite:/
        return urlunsplit(parts._replace(query="", fragment=""))

    @property
    def scheme(self) -> str:
        """The tracking URI's scheme: ``http``, ``https``, ``databricks``, ``sqlite`` …."""
        uri = self.effective_tracking_uri
        return "databricks" if uri == "databricks" else urlsplit(uri).scheme

    @property
    def is_remote(self) -> bool:
        """Whether runs go to a tracking server over the network (HTTP or Databricks)."""
        return self.scheme in {"http", "https", "databricks"}

    @property
    def username(self) -> SecretStr | None:
        """The basic-auth user (``MLFLOW_TRACKING_USERNAME``, or from the URI)."""
        return self.tracking_username

    @property
    def password(self) -> SecretStr | None:
        """The basic-auth password (``MLFLOW_TRACKING_PASSWORD``, or from the URI)."""
        return self.tracking_password

    @property
    def credential_method(self) -> CredentialMethod:
        """Which one credential method is configured."""
        if self.scheme == "databricks":
            return "databricks"
        if self.username is not None:
            return "basic"
        if self.tracking_token is not None:
            return "token"
        return "none"

    @property
    def experiment(self) -> str:
        """The experiment of new runs, as a name (or an id when only an id is set)."""
        return self.experiment_name or self.experiment_id or self.default_experiment

    def http_budget(self) -> dict[str, str]:
        """MLflow's HTTP retry variables to set while a run is open; only those to set.

        An explicit ``http_*`` knob is always set. With the spool on, the unset ones are
        derived from ``spool_grace`` so that a synchronous MLflow call gives up after
        about ``spool_grace`` seconds: backoff factor 1, the fewest retries (at most 10)
        whose backoff sleeps add up to at least the grace (urllib3 sleeps 0, 2, 4, 8 …
        seconds between attempts, each at most 120: ``2**n - 2`` up to 7 retries), and
        a per-request timeout of the grace within 10-120 seconds. With the spool off,
        unset knobs are left to MLflow's defaults (7 retries, factor 2, 120 s).

        Returns:
            ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR`` and
            ``..._TIMEOUT`` (whole seconds, rounded up), those that should be set.

        Example:
            >>> Settings(tracking_uri="http://h:5000").http_budget()
            {'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '5', 'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR': '1', 'MLFLOW_HTTP_REQUEST_TIMEOUT': '30'}
            >>> Settings(tracking_uri="http://h:5000", spool="off").http_budget()
            {}
        """  # noqa: E501  -- a doctest line cannot wrap
        derive = self.spool == "on"
        budget: dict[str, str] = {}
        if self.http_max_retries is not None:
            budget["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.http_max_retries)
        elif derive:
            budget["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(_retries_within(self.spool_grace))
        if self.http_backoff_factor is not None:
            budget["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(self.http_backoff_factor)
        elif derive:
            budget["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
        if self.http_timeout is not None:
            budget["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(math.ceil(self.http_timeout))
        elif derive:
            timeout = int(min(120.0, max(10.0, self.spool_grace)))
            budget["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
        return budget

    def refreshed(self) -> Settings:
        """A copy that keeps the values given as keyword arguments and reads everything else from the environment again.

        Platforms inject some variables (credentials, for example) when a task starts,
        after a ``Settings`` built at import time; the copy sees them.

        Raises:
            ConfigurationError: When the environment now holds an invalid value.

        Example:
            >>> early = Settings(tracking_uri="http://mlflow.example.com:5000")
            >>> late = early.refreshed()  # after the platform set MLFLOW_TRACKING_TOKEN
            >>> late.tracking_uri
            'http://mlflow.example.com:5000'
        """  # noqa: E501  -- the summary line is the documented definition
        arguments: dict[str, Any] = {
            name: getattr(self, name)
            for name, origin in self._origins.items()
            if origin == "argument" and name in type(self).model_fields
        }
        if "tracking_uri" in arguments:
            arguments["tracking_uri"] = self.effective_tracking_uri  # a database's user back
        return type(self)(**arguments)

    def secret_values(self) -> tuple[str, ...]:
        """Every secret this configuration holds, for redaction. Never log the result."""
        secrets = [self.tracking_username, self.tracking_password, self.tracking_token]
        secrets.append(self.databricks_token)
        if self._store_userinfo is not None:
            user, _, password = self._store_userinfo.get_secret_value().partition(":")
            secrets += [SecretStr(unquote(user)), SecretStr(unquote(password))]
            secrets.append(self._store_userinfo)
        values = (s.get_secret_value() for s in secrets if s is not None)
        return tuple(dict.fromkeys(v for v in values if v))

    def describe(self) -> tuple[SettingSource, ...]:
        """Every setting, its (redacted) value and where it came from.

        The source is what the sources recorded while building these settings:
        ``"argument"``, the environment variable that supplied the value, or
        ``"default"`` (for the tracking URI, the value is then MLflow's local default).

        Returns:
            One :class:`SettingSource` per field, in declaration order.

        Example:
            >>> rows = Settings(tracking_uri="https://h", tracking_token="t").describe()
            >>> token = next(r for r in rows if r.name == "tracking_token")
            >>> token.value, token.source
            ('**********', 'argument')
        """
        rows = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "**********"
            elif name == "tracking_uri":
                shown = self.safe_tracking_uri
            elif isinstance(value, ByteSize):
                shown = value.human_readable(decimal=False)
            else:
                shown = "" if value is None else str(value)
            source = self._origins.get(name, "default")
            rows.append(SettingSource(name, shown, source, _variables(field.validation_alias)))
        return tuple(rows)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if key == "tracking_uri" and value is not None:
                yield key, self.safe_tracking_uri
            else:
                yield key, value


# --- the sources ------------------------------------------------------------------------
class _Arguments(InitSettingsSource):
    """The keyword arguments; ``None`` (and a blank tracking URI) mean "not given".

    Renamed keywords are accepted with a ``DeprecationWarning``; an unknown keyword is
    refused with the closest known one.
    """

    def __init__(self, settings_cls: type[BaseSettings], given: Mapping[str, Any]) -> None:
        arguments: dict[str, Any] = {}
        for key, value in given.items():
            name = _RENAMED.get(key, key)
            if name != key:
                _warn_renamed(key, keyword=True)
                if _given(given, name):
                    raise ConfigurationError(
                        f"Settings() got both {key}= and {name}=",
                        variable=name,
                        fix=f"pass only {name}= ({key}= is its deprecated name)",
                    )
            if value is None or (_field_of(name) == "tracking_uri" and _blank(value)):
                continue
            arguments[name] = value
        unknown = [key for key in arguments if _field_of(key) is None]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(Settings.model_fields), n=1)
            hint = f"did you mean {close[0]}=? " if close else ""
            raise ConfigurationError(
                f"Settings() got an unknown keyword argument {unknown[0]!r}",
                variable=unknown[0],
                fix=f"{hint}the settings are: {', '.join(Settings.model_fields)}",
            )
        super().__init__(settings_cls, init_kwargs=arguments)
        self.origins = {_field_of(key) or key: "argument" for key in arguments}

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        return {**data, _ORIGINS: dict(self.origins)} if self.origins else data


class _Environment(PydanticBaseSettingsSource):
    """The environment: each field's variables in order; the first one set wins.

    Reads the snapshot that pydantic-settings' environment source took, refuses an
    unknown ``MICHELANGELO_MLFLOW_*`` variable, skips a blank tracking URI (unset), and
    records which variable supplied each field.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self.environ = environ
        self.origins: dict[str, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The value of the first of the field's variables that is set, and its name."""
        for variable in _variables(field.validation_alias):
            value = self.environ.get(variable)
            if value is None or (field_name == "tracking_uri" and _blank(value)):
                continue
            return value, variable, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        _reject_unknown_variables(self.environ)
        data: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, variable, _ = self.get_field_value(field, name)
            if value is not None:
                data[_variables(field.validation_alias)[0]] = value  # keyed as _Arguments
                self.origins[name] = variable
        return {**data, _ORIGINS: dict(self.origins)} if self.origins else data


# --- module functions -------------------------------------------------------------------
def variables_of(field: str) -> tuple[str, ...]:
    """The environment variables a :class:`Settings` field reads, in precedence order."""
    return _variables(Settings.model_fields[field].validation_alias)


def all_variables() -> dict[str, str]:
    """Every environment variable Settings reads, mapped to its field name."""
    return {
        var: name
        for name, field in Settings.model_fields.items()
        for var in _variables(field.validation_alias)
    }


def _variables(alias: object) -> tuple[str, ...]:
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return ()


def _field_of(key: str) -> str | None:
    """The field a data key (a field name or one of its variables) belongs to."""
    if key in Settings.model_fields:
        return key
    return all_variables().get(key)


def _key_of(data: Mapping[str, Any], field: str) -> str | None:
    """The key under which ``data`` holds ``field`` (its variables first, like pydantic)."""
    return next((k for k in (*variables_of(field), field) if k in data), None)


def _where(origins: Mapping[str, str], field: str) -> str:
    """The name to blame for a field's value: its variable, or the keyword argument."""
    origin = origins.get(field, "argument")
    return field if origin == "argument" else origin


def _blank(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


def _reject_unknown_variables(environ: Mapping[str, str | None]) -> None:
    known = {var for var in all_variables() if var.startswith(PREFIX)}
    for var in sorted(environ):
        if var.startswith(PREFIX) and var not in known:
            close = difflib.get_close_matches(var, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else "see the configuration docs"
            raise ConfigurationError(
                f"unknown environment variable {var}",
                variable=var,
                fix=f"{hint} (known: {', '.join(sorted(known))})",
            )


def _translate(exc: ValidationError, origins: Mapping[str, str]) -> ConfigurationError:
    """One ``ConfigurationError`` for a ``ValidationError``, naming the value's origin."""
    errors = exc.errors()
    for error in errors:
        original = (error.get("ctx") or {}).get("error")
        if isinstance(original, ConfigurationError):
            return original
    error = errors[0]
    key = str(error["loc"][0]) if error["loc"] else ""
    field = _field_of(key)
    if field is None:
        return ConfigurationError(
            f"invalid setting {key!r}: {error['msg']}",
            variable=key or None,
            fix=f"pass one of the documented settings ({', '.join(Settings.model_fields)})",
        )
    info = Settings.model_fields[field]
    secret = SecretStr in (info.annotation, *get_args(info.annotation))
    given = error.get("input")
    shown = (
        "" if secret or not isinstance(given, (str, int, float)) else f"={_redact(str(given))!r}"
    )
    origin = origins.get(field, "argument" if key == field else key)
    if origin == "argument":
        return ConfigurationError(
            f"invalid value for the argument {field}{shown} of Settings: {error['msg']}",
            variable=field,
            fix=f"pass a valid {field}= or leave it out; {info.description}",
        )
    return ConfigurationError(
        f"invalid value for {origin}{shown} (Settings.{field}): {error['msg']}",
        variable=origin,
        fix=f"set {origin} to a valid value or unset it; {info.description}",
    )


def _warn_renamed(old: str, *, keyword: bool = False) -> None:
    new = _RENAMED[old]
    what = f"Settings({old}=...)" if keyword else f"Settings.{old}"
    _warn(
        f"{what} is deprecated: use {new} (its environment variable is unchanged)",
        DeprecationWarning,
        quiet_inside_package=True,
    )


def _warn(message: str, category: type[Warning], *, quiet_inside_package: bool = False) -> None:
    """Warn at the first frame outside this module and pydantic: the caller's line.

    With ``quiet_inside_package``, a caller inside ``michelangelo_mlflow`` is not
    warned: users cannot act on the SDK's own use of a deprecated name.
    """
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and _is_plumbing(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    module = str(frame.f_globals.get("__name__", ""))
    if quiet_inside_package and module.split(".")[0] == "michelangelo_mlflow":
        return
    warnings.warn(message, category, stacklevel=level)


def _is_plumbing(module: str) -> bool:
    return module == __name__ or module.split(".")[0] in {
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
    }


# --- the tracking URI -------------------------------------------------------------------
def _prepare_tracking_uri(data: dict[str, Any], origins: dict[str, str]) -> SecretStr | None:
    """Check the raw tracking URI's form and move its credentials out of it.

    http(s) credentials go to the basic-auth fields (refused when those are given
    too); a database URI's ``user:password@`` is returned, to be kept apart.
    """
    key = _key_of(data, "tracking_uri")
    if key is None or not isinstance(data[key], str):
        return None  # unset, or not a string: pydantic reports the type
    uri: str = data[key]
    if _blank(uri):  # Settings.model_validate({"tracking_uri": " "}): unset, as from a source
        del data[key]
        origins.pop("tracking_uri", None)
        return None
    variable = _where(origins, "tracking_uri")
    _check_uri_form(uri, variable)
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return None
    userinfo, _, host = parts.netloc.rpartition("@")
    data[key] = urlunsplit(parts._replace(netloc=host))
    if parts.scheme.split("+")[0] in _DATABASES:
        return SecretStr(userinfo)
    if parts.scheme not in _HTTP:
        data[key] = uri  # no credentials in this kind of URI: leave it as given
        return None
    basic = [f for f in ("tracking_username", "tracking_password") if _given(data, f)]
    if basic:
        raise ConfigurationError(
            f"credentials are given twice: in the tracking URI ({variable}) and as "
            f"{' and '.join(variables_of(f)[0] for f in basic)} (or the "
            "tracking_username=/tracking_password= arguments)",
            variable=variable,
            fix=f"keep one: remove user:password@ from {variable}, or unset "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD",
        )
    user, _, password = userinfo.partition(":")
    for name, secret in (("tracking_username", user), ("tracking_password", password)):
        for stale in (*variables_of(name), name):
            data.pop(stale, None)
        data[name] = SecretStr(unquote(secret))
        origins[name] = origins.get("tracking_uri", "argument")
    return None


def _given(data: Mapping[str, Any], field: str) -> bool:
    key = _key_of(data, field)
    return key is not None and data[key] is not None


def _check_uri_form(uri: str, variable: str) -> None:
    """Refuse a tracking URI MLflow cannot use, naming where it came from."""
    shown = _redact(uri)
    named = _named(variable, shown)
    _check_uri_text(uri, shown, named, variable)
    if uri == "databricks":
        return
    try:
        parts = urlsplit(uri)
        port = parts.port if parts.scheme in _HTTP else None
    except ValueError:
        raise ConfigurationError(
            f"{named} has an invalid port or host",
            variable=variable,
            fix=f"use a URI such as {_EXAMPLE_URI}",
        ) from None
    scheme = parts.scheme
    if scheme in _HTTP and not parts.hostname:
        raise ConfigurationError(
            f"{named} has no host",
            variable=variable,
            fix=f"use a URI such as {_EXAMPLE_URI}",
        )
    if scheme in _HTTP and port == 0:
        raise ConfigurationError(
            f"{named} has an invalid port",
            variable=variable,
            fix=f"use a URI such as {_EXAMPLE_URI}",
        )
    _check_scheme(scheme, shown, named, variable)


def _check_uri_text(uri: str, shown: str, named: str, variable: str) -> None:
    """Refuse what is not URI-shaped at all: spaces, a bare host:port, ``http//``."""
    if any(c.isspace() for c in uri):
        raise ConfigurationError(
            f"{named} is not a URI (it has spaces)",
            variable=variable,
            fix=f"use a URI such as {_EXAMPLE_URI}, databricks or sqlite:///mlflow.db",
        )
    if _HOST_PORT.fullmatch(shown) and "://" not in shown:
        raise ConfigurationError(
            f"{named} looks like host:port but has no scheme, so MLflow cannot use it",
            variable=variable,
            fix=f"did you mean http://{shown}? (or https://{shown})",
        )
    for scheme in ("https", "http"):
        if shown.startswith(f"{scheme}//") or (
            shown.startswith(f"{scheme}:/") and not shown.startswith(f"{scheme}://")
        ):
            fixed = f"{scheme}://{shown[len(scheme) :].lstrip(':/')}"
            raise ConfigurationError(
                f"{named} is not a URI: its scheme is not followed by ://",
                variable=variable,
                fix=f"did you mean {fixed}?",
            )


def _check_scheme(scheme: str, shown: str, named: str, variable: str) -> None:
    """Refuse a scheme no MLflow store serves, suggesting the nearest one."""
    if scheme in {"", "databricks", "file"} or _is_drive(scheme) or scheme in _HTTP:
        return
    if scheme.split("+")[0] in {*_DATABASES, "sqlite"} or scheme in _plugin_schemes():
        return
    candidates = ["http", "https", "databricks", "sqlite", "file", *sorted(_DATABASES)]
    close = difflib.get_close_matches(scheme, candidates, n=1, cutoff=0.5)
    nearest = close[0] if close else "http"
    rest = shown[len(scheme) + 1 :] if shown.lower().startswith(f"{scheme}:") else shown
    if nearest in {*_HTTP, "databricks"}:
        rest = "//" + rest.lstrip("/")
    raise ConfigurationError(
        f"{named} has the unsupported scheme {scheme!r}",
        variable=variable,
        fix=f"did you mean {nearest}:{rest}? MLflow tracks to {', '.join(_SUPPORTED)}",
    )


def _named(variable: str, shown: str) -> str:
    """``VARIABLE='value'``, saying what ``TRACKING_URI`` is."""
    named = f"{variable}={shown!r}"
    return (
        f"{named} (the michelangelo-config ConfigMap key)" if variable == "TRACKING_URI" else named
    )


def _is_drive(scheme: str) -> bool:
    return len(scheme) == 1 and scheme.isalpha()  # C:\runs is a Windows path


@functools.cache
def _plugin_schemes() -> frozenset[str]:
    """Schemes of tracking stores that other packages register with MLflow."""
    return frozenset(ep.name for ep in entry_points(group="mlflow.tracking_store"))


def _redact(uri: str) -> str:
    """A URI as it may appear in a message: no ``user:password@``, query or fragment."""
    head, sep, tail = uri.partition("://")
    if not sep:
        head, tail = "", uri
    netloc, slash, path = tail.partition("/")
    path = path.split("?")[0].split("#")[0]
    return f"{head}{sep}{netloc.rpartition('@')[2]}{slash}{path}"


def _local_store(uri: str) -> tuple[Literal["sqlite", "file"], Path] | None:
    """The kind and path of a store on this machine's disk, or ``None``.

    For ``sqlite:`` the path is the database file; for ``file:`` and plain paths (which
    MLflow opens as a file store) it is the store's directory.
    """
    if uri == "databricks":
        return None
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme.split("+")[0] == "sqlite":
        path = unquote(parts.path)[1:]  # sqlite:///rel.db -> rel.db, sqlite:////abs -> /abs
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return "sqlite", Path(path)
    if scheme == "file":
        return "file", Path(unquote(parts.path) or ".")
    if scheme == "" or _is_drive(scheme):
        return "file", Path(uri)
    return None


def _check_store(settings: Settings, variable: str) -> None:
    """Refuse a tracking store runs cannot be written to, or would be lost from."""
    uri = settings.tracking_uri
    if uri is None:
        if settings.remote_run:
            raise ConfigurationError(
                "no MLflow tracking URI is set in this remote task pod (UF_REMOTE_RUN=1; "
                "MLFLOW_TRACKING_URI and TRACKING_URI are unset or blank): runs would be "
                "written to the pod's local disk and lost with the pod",
                variable="MLFLOW_TRACKING_URI",
                fix=f"{_SET_THE_URI}. (TRACKING_URI, a key of the michelangelo-config "
                "ConfigMap, is read as well if an operator set it.)",
            )
        return
    store = _local_store(uri)
    if store is None:
        return
    kind, path = store
    absolute = _cwd() / path
    named = _named(variable, _redact(uri))
    if settings.remote_run and not settings.allow_local_store:
        raise ConfigurationError(
            f"{named} is a store on this remote task pod's own disk (UF_REMOTE_RUN=1): "
            "runs would be written to the pod's local disk and lost with the pod",
            variable=variable,
            fix=f"point it at the MLflow tracking server: {_SET_THE_URI}. If {absolute} is on "
            "a volume that outlives the pod, set MICHELANGELO_MLFLOW_ALLOW_LOCAL_STORE=true",
        )
    version = _mlflow_version()
    if kind == "file" and _refuses_file_store(version) and not settings.allow_file_store:
        raise ConfigurationError(
            f"{named} is a file store, which the installed MLflow client"
            f"{f' ({version})' if version else ''} refuses: MLflow 3.13 put the file store "
            "in maintenance mode",
            variable=variable,
            fix=f"use {_sqlite_uri(absolute / 'mlflow.db')} (mlflow migrate-filestore "
            "copies existing runs into it), or set MLFLOW_ALLOW_FILE_STORE=true",
        )
    problem = _unwritable(absolute, database=kind == "sqlite")
    if problem is not None:
        raise ConfigurationError(
            f"{named} cannot be used: {problem}",
            variable=variable,
            fix=f"name a {'database file' if kind == 'sqlite' else 'directory'} this "
            f"process can create and write, such as {_sqlite_uri(_cwd() / 'mlflow.db')}"
            ", or remove what is in the way / fix the permissions",
        )


def _unwritable(store: Path, *, database: bool) -> str | None:
    """Why MLflow could not create or write a store at ``store``, or ``None``.

    ``store`` is a sqlite database file (``database``) or a file store's directory.
    Nothing is created: the first existing ancestor, where ``mkdir -p`` would start,
    must be a writable directory.
    """
    probe = store.parent if database else store
    try:
        if database and store.exists():
            if store.is_dir():
                return f"{store} is a directory, not a database file"
            if not os.access(store, os.R_OK | os.W_OK):
                return f"{store} cannot be written (no permission)"
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is a file, not a directory (a regular file is in the way)"
    except PermissionError:
        return f"{probe} cannot be reached (no permission)"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} cannot be written (no permission)"
    return None


def _sqlite_uri(path: Path) -> str:
    """A sqlite URI for an absolute path, written as MLflow writes its default."""
    prefix = "sqlite://" if sys.platform == "win32" else "sqlite:///"
    return prefix + pathname2url(str(path))


def _holds_runs(mlruns: Path) -> bool:
    """Whether a file store holds experiments: MLflow's test for keeping ./mlruns."""
    try:
        return any(
            entry.is_dir() and entry.name.isdigit() and os.path.lexists(entry / "meta.yaml")
            for entry in mlruns.iterdir()
        )
    except OSError:
        return False


def _cwd() -> Path:
    """The working directory, which relative stores and MLflow's default live in."""
    try:
        return Path.cwd()
    except OSError as exc:  # deleted under the process
        raise ConfigurationError(
            f"the working directory cannot be read ({exc.strerror}), so MLflow's local "
            "store has no place",
            variable="MLFLOW_TRACKING_URI",
            fix="set MLFLOW_TRACKING_URI to a tracking server or an absolute sqlite:/// path, "
            "or run from an existing directory",
        ) from None


def _mlflow_local_default() -> str:
    """MLflow's local default store in the working directory (see the module docs)."""
    cwd = _cwd()
    mlruns = cwd / "mlruns"
    version = _mlflow_version()
    if (version is not None and version.release < (3, 7)) or _holds_runs(mlruns):
        return mlruns.as_uri()
    return _sqlite_uri(cwd / "mlflow.db")


def _refuses_file_store(version: Version | None) -> bool:
    return version is None or version.release >= (3, 13)


@functools.cache
def _mlflow_version() -> Version | None:
    """The installed MLflow client's version, from package metadata (no import)."""
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return Version(_dist_version(dist))
        except (PackageNotFoundError, InvalidVersion):
            continue
    return None


_BACKOFF_MAX = 120.0
"""urllib3's ``Retry.DEFAULT_BACKOFF_MAX``: no single backoff sleep is longer (MLflow keeps it)."""


def _backoff_total(retries: int) -> float:
    """Seconds urllib3 sleeps over ``retries`` retries with backoff factor 1.

    0 before the first retry, then 2, 4, 8 … seconds, each at most 120: ``2**n - 2``
    up to 7 retries (126 s), 486 s for 10.
    """
    return sum(min(_BACKOFF_MAX, 2.0 ** (k - 1)) for k in range(2, retries + 1))


def _retries_within(grace: float) -> int:
    """The fewest retries (at most 10) whose backoff sleeps add up to ``grace``."""
    return next((n for n in range(11) if _backoff_total(n) >= grace), 10)


# --- credentials and the API server ------------------------------------------------------
def _check_credentials(s: Settings, uri_variable: str) -> None:
    basic = (s.tracking_username is not None, s.tracking_password is not None)
    if basic[0] != basic[1]:
        given, missing = (
            ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
            if basic[0]
            else ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME")
        )
        raise ConfigurationError(
            f"{given} is set but {missing} is not: basic auth needs both",
            variable=missing,
            fix=f"set {missing} as well (ma pipeline dev-run ... --env {missing}=...), "
            f"or unset {given}",
        )
    if s.username is not None and s.tracking_token is not None:
        raise ConfigurationError(
            "two credential methods are set: basic auth (MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD or user:password@ in the URI) and a bearer token "
            "(MLFLOW_TRACKING_TOKEN)",
            variable="MLFLOW_TRACKING_TOKEN",
            fix="set exactly one method: unset MLFLOW_TRACKING_TOKEN or the basic-auth pair",
        )
    if s.tracking_uri is not None and s.scheme == "databricks":
        _check_databricks(s)
        return
    if s.credential_method in {"basic", "token"} and s.tracking_uri is not None:
        parts = urlsplit(s.tracking_uri)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            _warn(
                f"credentials for {s.safe_tracking_uri} ({uri_variable}) travel in clear "
                "text over plain http://; use an https:// tracking URI",
                MichelangeloMlflowWarning,
            )
    if s.insecure_tls:
        _warn(
            "MLFLOW_TRACKING_INSECURE_TLS is set: the tracking server's TLS certificate is "
            "not verified; set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle instead",
            MichelangeloMlflowWarning,
        )
    if s.server_cert_path is not None and not s.server_cert_path.is_file():
        raise ConfigurationError(
            f"MLFLOW_TRACKING_SERVER_CERT_PATH names {str(s.server_cert_path)!r}, "
            "which is not a file",
            variable="MLFLOW_TRACKING_SERVER_CERT_PATH",
            fix="point it at the PEM CA bundle that signed the server's certificate",
        )


def _check_databricks(s: Settings) -> None:
    assert s.tracking_uri is not None
    parts = urlsplit(s.tracking_uri)
    profile = parts.netloc  # bare "databricks" has no netloc (and its path is "databricks")
    if profile:
        return  # databricks://PROFILE: the profile in ~/.databrickscfg holds host and token
    missing = [
        name
        for name, value in (
            ("DATABRICKS_HOST", s.databricks_host),
            ("DATABRICKS_TOKEN", s.databricks_token),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError(
            f"MLFLOW_TRACKING_URI=databricks needs DATABRICKS_HOST and DATABRICKS_TOKEN; "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set",
            variable=missing[0],
            fix="pass both at submission time (ma pipeline dev-run ... "
            "--env DATABRICKS_HOST=https://<workspace> --env DATABRICKS_TOKEN=<token>), "
            "or use MLFLOW_TRACKING_URI=databricks://<profile>",
        )
    if s.databricks_host and not urlsplit(s.databricks_host).scheme == "https":
        raise ConfigurationError(
            f"DATABRICKS_HOST={s.databricks_host!r} is not an https:// URL",
            variable="DATABRICKS_HOST",
            fix="set it to the workspace URL, such as https://<workspace>.azuredatabricks.net",
        )


def _check_api_server(value: str | None) -> None:
    """``MA_API_SERVER`` is ``[grpc://|dns:///]host[:port]``; empty means unset."""
    if not value:
        return
    match = _API_SERVER.fullmatch(value)
    port = match["port"] if match else None
    if match and (port is None or 1 <= int(port) <= 65535):
        return
    raise ConfigurationError(
        f"MA_API_SERVER={value!r} is not host:port"
        + (f" (port {port} is not 1-65535)" if port is not None else ""),
        variable="MA_API_SERVER",
        fix="set it to the API server's host[:port], such as "
        "ma-apiserver.michelangelo:15566 (grpc:// or dns:/// may precede it)",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
