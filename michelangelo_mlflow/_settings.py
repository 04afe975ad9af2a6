"""Settings: the only place that reads the environment.

Every value has one documented source order: an explicit keyword argument, then the
environment variables named in the field's ``validation_alias`` (first one set wins),
then the default. ``Settings.describe()`` tells where each value came from.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowWarning

PREFIX = "MICHELANGELO_MLFLOW_"
"""Prefix of this SDK's own environment variables."""

DEFAULT_EXPERIMENT = "Default"
"""The experiment used when neither an argument nor ``MLFLOW_EXPERIMENT_*`` names one."""

CredentialMethod = Literal["none", "basic", "token", "databricks"]
VersionPolicy = Literal["strict", "warn", "off"]
RegistryBackendName = Literal["auto", "apiserver", "kubernetes", "manifest", "off"]
OnRetry = Literal["new", "resume"]
PipelineRunMode = Literal["off", "nested"]

_LOCAL_SCHEMES = frozenset({"", "file", "sqlite", "postgresql", "mysql", "mssql"})


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _ours(name: str) -> AliasChoices:
    return AliasChoices(PREFIX + name)


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


class Settings(BaseSettings):
    """Resolved, validated configuration for tracking runs and registering models.

    Construct it with no arguments to read the environment, or pass keyword
    arguments to override single values (``None`` means "not given"). Invalid or
    contradictory values raise :class:`~michelangelo_mlflow.exceptions.ConfigurationError`
    naming the variable and the fix. Secrets are ``SecretStr`` and never appear in
    ``repr``.

    Tracking URI precedence: argument > ``MLFLOW_TRACKING_URI`` > ``TRACKING_URI``
    (the ``michelangelo-config`` ConfigMap key) > MLflow's own local default, which is
    refused inside a remote task pod (``UF_REMOTE_RUN=1``) because the pod's disk
    is deleted with the pod.

    Example:
        >>> s = Settings(tracking_uri="http://mlflow.example.com:5000", namespace="ml-team")
        >>> s.safe_tracking_uri
        'http://mlflow.example.com:5000'
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
        hide_input_in_errors=True,
    )

    # --- MLflow's own variables ---------------------------------------------------
    tracking_uri: str | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_URI", "TRACKING_URI"),
        description="Where runs are tracked. Unset: MLflow's local default (refused in a "
        "remote task pod).",
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
        description="HTTP basic auth user (with MLFLOW_TRACKING_PASSWORD).",
    )
    tracking_password: SecretStr | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_PASSWORD"),
        description="HTTP basic auth password (with MLFLOW_TRACKING_USERNAME).",
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
        description="Michelangelo API server host:port, for the apiserver registry backend.",
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

    # --- This SDK's own knobs ------------------------------------------------------
    default_experiment: str = Field(
        DEFAULT_EXPERIMENT,
        validation_alias=_ours("DEFAULT_EXPERIMENT"),
        description="Experiment used when no argument or MLFLOW_EXPERIMENT_* names one.",
    )
    preflight: bool = Field(
        True,
        validation_alias=_ours("PREFLIGHT"),
        description="Check reachability, credentials and versions before the first run.",
    )
    preflight_timeout: float = Field(
        2.0,
        gt=0,
        validation_alias=_ours("PREFLIGHT_TIMEOUT"),
        description="Connect and read timeout of one preflight request, in seconds.",
    )
    preflight_attempts: int = Field(
        3,
        ge=1,
        le=10,
        validation_alias=_ours("PREFLIGHT_ATTEMPTS"),
        description="Attempts of one preflight check before it fails.",
    )
    preflight_deadline: float = Field(
        4.5,
        gt=0,
        validation_alias=_ours("PREFLIGHT_DEADLINE"),
        description="Seconds all preflight attempts together may take.",
    )
    version_policy: VersionPolicy = Field(
        "warn",
        validation_alias=_ours("VERSION_POLICY"),
        description="Client/server version skew: strict raises, warn warns once, off skips.",
    )
    http_max_retries: int = Field(
        3,
        ge=0,
        le=10,
        validation_alias=_ours("HTTP_MAX_RETRIES"),
        description="MLflow's HTTP retries while a run is open (MLflow's default is 7).",
    )
    http_backoff_factor: int = Field(
        1,
        ge=0,
        validation_alias=_ours("HTTP_BACKOFF_FACTOR"),
        description="MLflow's HTTP backoff factor while a run is open (MLflow's default is 2).",
    )
    http_timeout: float = Field(
        60.0,
        gt=0,
        validation_alias=_ours("HTTP_TIMEOUT"),
        description="MLflow's per-request timeout in seconds while a run is open "
        "(MLflow's default is 120).",
    )
    registry: RegistryBackendName = Field(
        "auto",
        validation_alias=_ours("REGISTRY"),
        description="Michelangelo Model backend: auto, apiserver, kubernetes, manifest, off.",
    )
    manifest_dir: str = Field(
        "./michelangelo-models",
        validation_alias=_ours("MANIFEST_DIR"),
        description="Where the manifest backend writes Model YAML; - for stdout.",
    )
    api_server_tls: bool = Field(
        False,
        validation_alias=_ours("API_SERVER_TLS"),
        description="Use TLS to the Michelangelo API server.",
    )
    caller: str = Field(
        "michelangelo-mlflow",
        validation_alias=_ours("CALLER"),
        description="Value of the rpc-caller header sent to the Michelangelo API server.",
    )
    register_timeout: float = Field(
        300.0,
        gt=0,
        validation_alias=_ours("REGISTER_TIMEOUT"),
        description="Seconds register_model waits for an MLflow model version to be READY.",
    )
    on_retry: OnRetry = Field(
        "new",
        validation_alias=_ours("ON_RETRY"),
        description="A retried task gets a new run (new) or reopens its unfinished one (resume).",
    )
    pipeline_run: PipelineRunMode = Field(
        "off",
        validation_alias=_ours("PIPELINE_RUN"),
        description="nested: one parent run per pipeline run, task runs nested under it.",
    )

    worker_context: str | None = Field(
        None,
        validation_alias=_ours("WORKER_CONTEXT"),
        description="Set by michelangelo_mlflow.ray in Ray workers' runtime env: the "
        "driver's run to attach to (JSON; no secrets). Not set by hand.",
    )

    _explicit: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def __init__(self, **values: Any) -> None:
        given = {key: value for key, value in values.items() if value is not None}
        _reject_unknown_variables(os.environ)
        try:
            super().__init__(**given)
        except ValidationError as exc:
            raise _configuration_error(exc) from None
        self._explicit = frozenset(given)

    # --- validation ----------------------------------------------------------------
    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.tracking_uri is not None:
            _check_uri(self.tracking_uri)
        if self.tracking_uri is None and self.remote_run:
            raise ConfigurationError(
                "no MLflow tracking URI is set in this remote task pod (UF_REMOTE_RUN=1): "
                "runs would be written to the pod's local disk and lost with the pod",
                variable="MLFLOW_TRACKING_URI",
                fix="pass it at submission time (ma pipeline dev-run ... "
                "--env MLFLOW_TRACKING_URI=http://mlflow.example.com:5000) or ask the "
                "operator to add TRACKING_URI to the michelangelo-config ConfigMap",
            )
        _check_credentials(self)
        return self

    # --- derived values ------------------------------------------------------------
    @property
    def uri_is_set(self) -> bool:
        """Whether a tracking URI was given (otherwise MLflow's local default applies)."""
        return self.tracking_uri is not None

    @property
    def effective_tracking_uri(self) -> str:
        """The tracking URI without embedded credentials, or MLflow's local default."""
        if self.tracking_uri is None:
            return _mlflow_default_tracking_uri()
        return _strip_userinfo(self.tracking_uri)

    @property
    def safe_tracking_uri(self) -> str:
        """The tracking URI as it may be shown anywhere: no credentials, no query."""
        parts = urlsplit(self.effective_tracking_uri)
        if not parts.query and not parts.fragment:
            return self.effective_tracking_uri  # urlunsplit would turn sqlite:/// into sqlite:/
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
        """The basic-auth user, from the URI or ``MLFLOW_TRACKING_USERNAME``."""
        embedded = _userinfo(self.tracking_uri)
        return embedded[0] if embedded else self.tracking_username

    @property
    def password(self) -> SecretStr | None:
        """The basic-auth password, from the URI or ``MLFLOW_TRACKING_PASSWORD``."""
        embedded = _userinfo(self.tracking_uri)
        return embedded[1] if embedded else self.tracking_password

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

    def secret_values(self) -> tuple[str, ...]:
        """Every secret this configuration holds, for redaction. Never log the result."""
        secrets = (
            self.username,
            self.password,
            self.tracking_token,
            self.databricks_token,
            self.tracking_username,
            self.tracking_password,
        )
        return tuple(s.get_secret_value() for s in secrets if s and s.get_secret_value())

    def describe(self) -> tuple[SettingSource, ...]:
        """Every setting, its (redacted) value and where it came from.

        Returns:
            One :class:`SettingSource` per field, in declaration order.
        """
        rows = []
        for name, field in type(self).model_fields.items():
            variables = _variables(field.validation_alias)
            if name in self._explicit:
                source = "argument"
            else:
                source = next((v for v in variables if v in os.environ), "default")
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "**********"
            elif name == "tracking_uri" and value is not None:
                shown = self.safe_tracking_uri
            else:
                shown = "" if value is None else str(value)
            rows.append(SettingSource(name, shown, source, variables))
        return tuple(rows)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if key == "tracking_uri" and value is not None:
                yield key, self.safe_tracking_uri
            else:
                yield key, value


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


def _reject_unknown_variables(environ: Mapping[str, str]) -> None:
    known = {var for var in all_variables() if var.startswith(PREFIX)}
    for var in environ:
        if var.startswith(PREFIX) and var not in known:
            close = difflib.get_close_matches(var, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else "see the configuration docs"
            raise ConfigurationError(
                f"unknown environment variable {var}",
                variable=var,
                fix=f"{hint} (known: {', '.join(sorted(known))})",
            )


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    for error in exc.errors():
        original = (error.get("ctx") or {}).get("error")
        if isinstance(original, ConfigurationError):
            return original
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    by_variable = all_variables()
    if field in by_variable:
        variables: tuple[str, ...] = (field,)
        field = by_variable[field]
    else:
        variables = variables_of(field) if field in Settings.model_fields else ()
    if not variables:
        return ConfigurationError(
            f"invalid setting {field!r}: {error['msg']}",
            variable=field or None,
            fix=f"pass one of the documented settings ({', '.join(Settings.model_fields)})",
        )
    variable = variables[0]
    return ConfigurationError(
        f"invalid value for {variable} (Settings.{field}): {error['msg']}",
        variable=variable,
        fix=f"set {variable} to a valid value or unset it; "
        f"{Settings.model_fields[field].description}",
    )


def _check_uri(uri: str) -> None:
    if not uri.strip() or any(c.isspace() for c in uri):
        raise ConfigurationError(
            f"the MLflow tracking URI {_strip_userinfo(uri)!r} is not a URI (it has spaces)",
            variable="MLFLOW_TRACKING_URI",
            fix="use a URI such as http://mlflow.example.com:5000, databricks or "
            "sqlite:///mlflow.db",
        )
    parts = urlsplit(uri)
    if parts.scheme in {"http", "https"} and not parts.hostname:
        raise ConfigurationError(
            f"the MLflow tracking URI {_strip_userinfo(uri)!r} has no host",
            variable="MLFLOW_TRACKING_URI",
            fix="use a URI such as http://mlflow.example.com:5000",
        )
    if parts.scheme in {"http", "https"}:
        try:
            parts.port  # noqa: B018  -- parsing the port validates it
        except ValueError:
            raise ConfigurationError(
                f"the MLflow tracking URI {_strip_userinfo(uri)!r} has an invalid port",
                variable="MLFLOW_TRACKING_URI",
                fix="use a URI such as http://mlflow.example.com:5000",
            ) from None


def _check_credentials(s: Settings) -> None:
    embedded = _userinfo(s.tracking_uri)
    basic_env = (s.tracking_username is not None, s.tracking_password is not None)
    if embedded and any(basic_env):
        raise ConfigurationError(
            "credentials are given twice: in the tracking URI and in "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD",
            variable="MLFLOW_TRACKING_URI",
            fix="keep one: remove user:password@ from the URI, or unset the two variables",
        )
    if basic_env[0] != basic_env[1]:
        given, missing = (
            ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
            if basic_env[0]
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
            warnings.warn(
                f"credentials for {s.safe_tracking_uri} travel in clear text over plain "
                "http://; use an https:// tracking URI",
                MichelangeloMlflowWarning,
                stacklevel=4,
            )
    if s.insecure_tls:
        warnings.warn(
            "MLFLOW_TRACKING_INSECURE_TLS is set: the tracking server's TLS certificate is "
            "not verified; set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle instead",
            MichelangeloMlflowWarning,
            stacklevel=4,
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


def _userinfo(uri: str | None) -> tuple[SecretStr, SecretStr] | None:
    if uri is None:
        return None
    parts = urlsplit(uri)
    if parts.scheme not in {"http", "https"} or parts.username is None:
        return None
    return SecretStr(unquote(parts.username)), SecretStr(unquote(parts.password or ""))


def _strip_userinfo(uri: str) -> str:
    parts: SplitResult = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _mlflow_default_tracking_uri() -> str:
    from michelangelo_mlflow._errors import import_mlflow

    import_mlflow()  # a broken install: MissingDependencyError, not a bare ImportError
    from mlflow.tracking._tracking_service import utils

    default: str = utils._get_default_tracking_uri()
    if default.startswith("sqlite:///") and not default.startswith("sqlite:////"):
        default = "sqlite:///" + os.path.abspath(default[len("sqlite:///") :])
    return default
