"""The ``Settings`` model: its fields, its validation, and the values derived from it.

The parts live next door: where values come from (``_sources``), the tracking URI's
form (``_uri``), local and pod stores (``_stores``), credentials (``_credentials``) and
the HTTP budget (``_budget``). This module declares the fields and runs the checks in
order, in :meth:`Settings._resolve`.

Invalid values raise :class:`~michelangelo_mlflow.exceptions.ConfigurationError` naming
where the value came from; the one place that turns pydantic's ``ValidationError`` into
it is the metaclass' ``__call__`` (pydantic wraps every ``ValueError`` raised during
validation, so the translation has to happen around the constructor).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    AliasGenerator,
    ByteSize,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from michelangelo_mlflow._settings import _budget, _credentials, _sources, _stores
from michelangelo_mlflow._settings._sources import SettingSource, env, our_variable, ours

if TYPE_CHECKING:
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMetaclass
else:
    _ModelMetaclass = type(BaseSettings)

DEFAULT_EXPERIMENT = "Default"
"""The experiment used when neither an argument nor ``MLFLOW_EXPERIMENT_*`` names one."""

CredentialMethod = Literal["none", "basic", "token", "databricks"]
VersionPolicy = Literal["strict", "warn", "off"]
RegistryBackendName = Literal["auto", "apiserver", "kubernetes", "manifest", "off"]
OnRetry = Literal["new", "resume"]
PipelineRunMode = Literal["off", "nested"]
SpoolMode = Literal["on", "off"]


class _ErrorBoundary(_ModelMetaclass):
    """Turns the ``ValidationError`` of ``Settings(...)`` into a ``ConfigurationError``.

    pydantic wraps every ``ValueError`` raised while validating (ours included) into a
    ``ValidationError``; this is the one place, around the constructor, that unwraps it.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise _sources.translate(exc, Settings.model_fields, {}) from None


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
        alias_generator=AliasGenerator(validation_alias=our_variable),
    )

    # --- MLflow's own variables ---------------------------------------------------
    tracking_uri: str | None = Field(
        None,
        validation_alias=env("MLFLOW_TRACKING_URI", "TRACKING_URI"),
        description="Where runs are tracked. Unset: MLflow's local default (refused in a "
        "remote task pod). Blank: an error (a warning when TRACKING_URI applies).",
    )
    registry_uri: str | None = Field(
        None,
        validation_alias=env("MLFLOW_REGISTRY_URI"),
        description="MLflow Model Registry URI; unset means the tracking URI.",
    )
    experiment_name: str | None = Field(
        None,
        validation_alias=env("MLFLOW_EXPERIMENT_NAME"),
        description=f'Experiment of new runs; default "{DEFAULT_EXPERIMENT}".',
    )
    experiment_id: str | None = Field(
        None,
        validation_alias=env("MLFLOW_EXPERIMENT_ID"),
        description="Experiment of new runs, by id; used when no name is given.",
    )
    inherited_run_id: str | None = Field(
        None,
        validation_alias=env("MLFLOW_RUN_ID"),
        description="Read only to make sure it is never resumed silently: pass run_id= "
        "to resume a run.",
    )
    tracking_username: SecretStr | None = Field(
        None,
        validation_alias=env("MLFLOW_TRACKING_USERNAME"),
        description="HTTP basic auth user (with MLFLOW_TRACKING_PASSWORD), or the user "
        "moved out of an http(s) tracking URI.",
    )
    tracking_password: SecretStr | None = Field(
        None,
        validation_alias=env("MLFLOW_TRACKING_PASSWORD"),
        description="HTTP basic auth password (with MLFLOW_TRACKING_USERNAME), or the "
        "password moved out of an http(s) tracking URI.",
    )
    tracking_token: SecretStr | None = Field(
        None,
        validation_alias=env("MLFLOW_TRACKING_TOKEN"),
        description="Bearer token for the tracking server.",
    )
    insecure_tls: bool = Field(
        False,
        validation_alias=env("MLFLOW_TRACKING_INSECURE_TLS"),
        description="Skip TLS certificate verification (warns).",
    )
    server_cert_path: Path | None = Field(
        None,
        validation_alias=env("MLFLOW_TRACKING_SERVER_CERT_PATH"),
        description="CA bundle that verifies the tracking server's certificate.",
    )
    databricks_host: str | None = Field(
        None,
        validation_alias=env("DATABRICKS_HOST"),
        description="Databricks workspace URL, for MLFLOW_TRACKING_URI=databricks.",
    )
    databricks_token: SecretStr | None = Field(
        None,
        validation_alias=env("DATABRICKS_TOKEN"),
        description="Databricks personal access token, for MLFLOW_TRACKING_URI=databricks.",
    )
    allow_file_store: bool = Field(
        False,
        validation_alias=env("MLFLOW_ALLOW_FILE_STORE"),
        description="MLflow 3.13+ refuses a file: store (or a plain path) unless this is "
        "true; without it such a tracking URI is refused up front.",
    )

    # --- Michelangelo's variables ---------------------------------------------------
    namespace: str | None = Field(
        None,
        validation_alias=env("MA_NAMESPACE"),
        description="Michelangelo project (Kubernetes namespace); set in task pods.",
    )
    pipeline_run_name: str | None = Field(
        None,
        validation_alias=env("MA_PIPELINE_RUN_NAME"),
        description="Michelangelo pipeline run; set in task pods.",
    )
    remote_run: bool = Field(
        False,
        validation_alias=env("UF_REMOTE_RUN"),
        description="1 in a remote uniflow task pod (Ray, Spark).",
    )
    local_run: bool = Field(
        False,
        validation_alias=env("UF_LOCAL_RUN"),
        description="1 in a local uniflow run.",
    )
    api_server: str | None = Field(
        None,
        validation_alias=env("MA_API_SERVER"),
        description="Michelangelo API server host[:port] (optional grpc:// or dns:/// "
        "prefix), for the apiserver registry backend.",
    )
    api_server_name: str = Field(
        "ma-apiserver",
        validation_alias=env("MA_API_SERVER_NAME"),
        description="Value of the rpc-service header sent to the Michelangelo API server.",
    )
    kubeconfig: str | None = Field(
        None,
        validation_alias=env("KUBECONFIG"),
        description="Kubeconfig path(s), for the kubernetes registry backend.",
    )
    kubernetes_service_host: str | None = Field(
        None,
        validation_alias=env("KUBERNETES_SERVICE_HOST"),
        description="Set by Kubernetes inside a pod; means in-cluster credentials exist.",
    )

    # --- This SDK's own knobs: MICHELANGELO_MLFLOW_<FIELD NAME> ---------------------
    default_experiment: str = Field(
        DEFAULT_EXPERIMENT,
        description="Experiment used when no argument or MLFLOW_EXPERIMENT_* names one.",
    )
    preflight_enabled: bool = Field(
        True,
        validation_alias=ours("PREFLIGHT"),  # the variable kept its name (was `preflight`)
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
    preflight_host_ttl: float = Field(
        60.0,
        ge=0,
        description="Seconds a passing preflight verdict is used by this user's other "
        "processes on the host (the same server, credentials and versions); 0 shares none.",
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
        validation_alias=ours("REGISTRY"),  # the variable kept its name (was `registry`)
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
        validation_alias=ours("PIPELINE_RUN"),  # the variable kept its name (was `pipeline_run`)
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
    senders: int = Field(
        8,
        ge=1,
        le=64,
        description="Requests in flight to one tracking server from all the processes of "
        "a host, at most (default 8, from 1 to 64): many tasks started at once on one node "
        "take turns instead of overrunning the server's database pool. A process that the "
        "server tells it is busy halves its own share of them, and takes them back slowly.",
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
        return _sources.declared_sources(settings_cls, init_settings, env_settings)

    # --- validation ----------------------------------------------------------------
    @model_validator(mode="wrap")
    @classmethod
    def _resolve(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        if not isinstance(data, dict):
            return handler(data)
        data = dict(data)
        origins, blanks = _sources.take_origins(cls.model_fields, data)
        store_userinfo = _sources.prepare_tracking_uri(cls.model_fields, data, origins)
        try:
            settings = handler(data)
        except ValidationError as exc:
            raise _sources.translate(exc, cls.model_fields, origins) from None
        settings._origins = origins
        settings._store_userinfo = store_userinfo
        if settings.tracking_uri is None:
            settings._local_default = _stores.mlflow_local_default()
        _sources.check_blank_variables(
            blanks, origins, local_store=settings._local_default, remote_run=settings.remote_run
        )
        uri_variable = _sources.where(origins, "tracking_uri")
        _stores.check_store(settings, uri_variable)
        _credentials.check_credentials(settings, origins)
        _credentials.check_api_server(settings.api_server)
        return settings

    # --- deprecated names ----------------------------------------------------------
    @property
    def preflight(self) -> bool:
        """Deprecated name of :attr:`preflight_enabled` (warns ``DeprecationWarning``)."""
        _sources.warn_renamed("preflight")
        return self.preflight_enabled

    @property
    def registry(self) -> RegistryBackendName:
        """Deprecated name of :attr:`registry_backend` (warns ``DeprecationWarning``)."""
        _sources.warn_renamed("registry")
        return self.registry_backend

    @property
    def pipeline_run(self) -> PipelineRunMode:
        """Deprecated name of :attr:`pipeline_run_mode` (warns ``DeprecationWarning``)."""
        _sources.warn_renamed("pipeline_run")
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
        default was resolved when these settings were built (see ``_stores``).
        """
        if self.tracking_uri is None:
            return self._local_default or _stores.mlflow_local_default()
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
        return _budget.http_budget(
            spool_on=self.spool == "on",
            spool_grace=self.spool_grace,
            max_retries=self.http_max_retries,
            backoff_factor=self.http_backoff_factor,
            timeout=self.http_timeout,
        )

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
        return _sources.describe(self, self._origins, self.safe_tracking_uri)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if key == "tracking_uri" and value is not None:
                yield key, self.safe_tracking_uri
            else:
                yield key, value


def variables_of(field: str) -> tuple[str, ...]:
    """The environment variables a :class:`Settings` field reads, in precedence order."""
    return _sources.variables(Settings.model_fields[field].validation_alias)


def all_variables() -> dict[str, str]:
    """Every environment variable Settings reads, mapped to its field name."""
    return _sources.all_variables(Settings.model_fields)
