"""Where each value comes from: the declared sources, variable names and origins.

Values come from two sources, in this order (the first that has a value wins), then
from the field's default:

1. the keyword arguments of ``Settings(...)`` (``None`` means "not given"; a blank
   tracking URI is refused);
2. the environment variables named in the field's ``validation_alias``, in order. This
   SDK's own variables are named by an alias generator (:func:`our_variable`):
   ``MICHELANGELO_MLFLOW_`` plus the field name in upper case. A blank tracking-URI
   variable gives no value; it is reported by :func:`check_blank_variables`.

The environment is read once, by pydantic-settings' own environment source; the
sources here take its snapshot. Each source records which field it supplied under
which name (the *origin*: ``"argument"`` or the variable), and the record travels with
the values into validation under the key :data:`ORIGINS`: :func:`describe` and every
error message (:func:`translate`) are derived from it.

Nothing here imports the ``Settings`` class: functions take its ``model_fields``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import AliasChoices, ByteSize, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
)

from michelangelo_mlflow._settings._uri import (
    DATABASES,
    EXAMPLE_URI,
    HTTP,
    SET_THE_URI,
    check_uri_form,
    redact,
)
from michelangelo_mlflow._settings._warnings import warn
from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowWarning

Fields = Mapping[str, FieldInfo]
"""``Settings.model_fields``: every field's declaration, by name."""

PREFIX = "MICHELANGELO_MLFLOW_"
"""Prefix of this SDK's own environment variables."""

ORIGINS = "__michelangelo_mlflow_origins__"
"""Key under which the sources pass {field: "argument" or variable} to validation."""

BLANK = "__michelangelo_mlflow_blank__"
"""Key under which the environment passes its blank tracking-URI variables, in order."""

RENAMED = {
    "preflight": "preflight_enabled",
    "registry": "registry_backend",
    "pipeline_run": "pipeline_run_mode",
}
"""Deprecated attribute and keyword names, and the field each one now is."""


def env(*names: str) -> AliasChoices:
    """The variables a field reads, in precedence order (MLflow's and Michelangelo's)."""
    return AliasChoices(*names)


def ours(name: str) -> AliasChoices:
    """This SDK's variable ``MICHELANGELO_MLFLOW_<name>``."""
    return AliasChoices(PREFIX + name)


def our_variable(field_name: str) -> AliasChoices:
    """The alias generator: ``spool_dir`` reads ``MICHELANGELO_MLFLOW_SPOOL_DIR``."""
    return ours(field_name.upper())


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


def declared_sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The keyword arguments, then pydantic-settings' snapshot of the environment."""
    given = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
    environ = env_settings.env_vars if isinstance(env_settings, EnvSettingsSource) else {}
    return _Arguments(settings_cls, given), _Environment(settings_cls, environ)


class _Arguments(InitSettingsSource):
    """The keyword arguments; ``None`` means "not given", a blank tracking URI is refused.

    Renamed keywords are accepted with a ``DeprecationWarning``; an unknown keyword is
    refused with the closest known one.
    """

    def __init__(self, settings_cls: type[BaseSettings], given: Mapping[str, Any]) -> None:
        fields = settings_cls.model_fields
        arguments: dict[str, Any] = {}
        for key, value in given.items():
            name = RENAMED.get(key, key)
            if name != key:
                warn_renamed(key, keyword=True)
                if is_given(fields, given, name):
                    raise ConfigurationError(
                        f"Settings() got both {key}= and {name}=",
                        variable=name,
                        fix=f"pass only {name}= ({key}= is its deprecated name)",
                    )
            if value is None:
                continue
            if field_of(fields, name) == "tracking_uri" and blank(value):
                raise blank_argument(value)
            arguments[name] = value
        unknown = [key for key in arguments if field_of(fields, key) is None]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(fields), n=1)
            hint = f"did you mean {close[0]}=? " if close else ""
            raise ConfigurationError(
                f"Settings() got an unknown keyword argument {unknown[0]!r}",
                variable=unknown[0],
                fix=f"{hint}the settings are: {', '.join(fields)}",
            )
        super().__init__(settings_cls, init_kwargs=arguments)
        self.origins = {field_of(fields, key) or key: "argument" for key in arguments}

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        return {**data, ORIGINS: dict(self.origins)} if self.origins else data


class _Environment(PydanticBaseSettingsSource):
    """The environment: each field's variables in order; the first one set wins.

    Reads the snapshot that pydantic-settings' environment source took, refuses an
    unknown ``MICHELANGELO_MLFLOW_*`` variable, records which variable supplied each
    field, and passes on the tracking-URI variables that are set but blank (they give
    no value; :func:`check_blank_variables` reports them).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self.environ = environ
        self.origins: dict[str, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The value of the first of the field's variables that is set, and its name."""
        for variable in variables(field.validation_alias):
            value = self.environ.get(variable)
            if value is None or (field_name == "tracking_uri" and blank(value)):
                continue
            return value, variable, False
        return None, field_name, False

    def _blanks_before(self, supplier: str | None) -> tuple[str, ...]:
        """The blank tracking-URI variables that outrank the one that supplied it."""
        blanks = []
        for variable in variables(self.settings_cls.model_fields["tracking_uri"].validation_alias):
            if variable == supplier:
                break
            if blank(self.environ.get(variable)):
                blanks.append(variable)
        return tuple(blanks)

    def __call__(self) -> dict[str, Any]:
        _reject_unknown_variables(self.settings_cls.model_fields, self.environ)
        data: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, variable, _ = self.get_field_value(field, name)
            if value is not None:
                data[variables(field.validation_alias)[0]] = value  # keyed as _Arguments
                self.origins[name] = variable
        blanks = self._blanks_before(self.origins.get("tracking_uri"))
        if blanks:
            data[BLANK] = blanks
        return {**data, ORIGINS: dict(self.origins)} if self.origins else data


# --- names and origins ------------------------------------------------------------------
def variables(alias: object) -> tuple[str, ...]:
    """The variable names of a field's ``validation_alias``, in precedence order."""
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return ()


def all_variables(fields: Fields) -> dict[str, str]:
    """Every environment variable the fields read, mapped to its field name."""
    return {
        var: name for name, field in fields.items() for var in variables(field.validation_alias)
    }


def field_of(fields: Fields, key: str) -> str | None:
    """The field a data key (a field name or one of its variables) belongs to."""
    if key in fields:
        return key
    return all_variables(fields).get(key)


def key_of(fields: Fields, data: Mapping[str, Any], field: str) -> str | None:
    """The key under which ``data`` holds ``field`` (its variables first, like pydantic)."""
    names = (*variables(fields[field].validation_alias), field)
    return next((k for k in names if k in data), None)


def is_given(fields: Fields, data: Mapping[str, Any], field: str) -> bool:
    """Whether ``data`` holds a value (not ``None``) for ``field``."""
    key = key_of(fields, data, field)
    return key is not None and data[key] is not None


def where(origins: Mapping[str, str], field: str) -> str:
    """The name to blame for a field's value: its variable, or the keyword argument."""
    origin = origins.get(field, "argument")
    return field if origin == "argument" else origin


def blank(value: object) -> bool:
    """Whether a value is a string of nothing but whitespace."""
    return isinstance(value, str) and not value.strip()


def take_origins(fields: Fields, data: dict[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Remove the sources' records from ``data``: the origins, and the blank variables.

    ``Settings.model_validate({...})`` passes no record: its keys count as arguments.

    Returns:
        {field: "argument" or its variable}, and the tracking-URI variables that were
        set but blank, in precedence order.
    """
    blanks = tuple(data.pop(BLANK, None) or ())
    origins: dict[str, str] = dict(data.pop(ORIGINS, None) or {})
    for name in fields:
        if name not in origins and key_of(fields, data, name) is not None:
            origins[name] = "argument"
    return origins, blanks


def blank_argument(value: str) -> ConfigurationError:
    """The error for ``Settings(tracking_uri="")`` or another blank string.

    An error, not a warning: ``None`` (or leaving the argument out) is the documented
    way to say "not given", so refusing a blank breaks no setup, while accepting it
    would track to the environment's URI or MLflow's local store when the caller meant
    a server (typically ``tracking_uri=config.get("uri", "")`` with the key missing).
    """
    return ConfigurationError(
        f"the argument tracking_uri={value!r} of Settings is blank",
        variable="tracking_uri",
        fix=f"pass the tracking server's URI, such as {EXAMPLE_URI}, or pass None (or "
        "leave tracking_uri out) to read MLFLOW_TRACKING_URI, then MLflow's local store",
    )


def check_blank_variables(
    blanks: tuple[str, ...],
    origins: Mapping[str, str],
    *,
    local_store: str | None,
    remote_run: bool,
) -> None:
    """Say so when a tracking-URI variable is set but blank and that changed the outcome.

    A blank ``MLFLOW_TRACKING_URI`` (or ``TRACKING_URI``) names no store, so it gives no
    value. When no other source names one, runs would go to MLflow's local store
    without a word, while whoever set the variable meant a server: that is a
    ``ConfigurationError``. Refusing it breaks no setup: the way to choose the local
    store, leaving the variable unset, keeps working. When a later variable applies
    (a blank ``MLFLOW_TRACKING_URI`` and the ``TRACKING_URI`` ConfigMap key), runs go
    to a real server, and pods whose submission template leaves the variable empty
    must keep working: that is a :class:`MichelangeloMlflowWarning`. A blank variable
    that a keyword argument or an earlier variable outranks changed nothing.

    Args:
        blanks: The blank variables that outrank the one that applies (all of them
            when none applies), in precedence order.
        origins: Where each field's value came from.
        local_store: MLflow's local default, when no tracking URI is set.
        remote_run: Whether this is a remote task pod (``UF_REMOTE_RUN=1``).

    Raises:
        ConfigurationError: No source names a tracking URI.
    """
    used = origins.get("tracking_uri")
    if not blanks or used == "argument":
        return
    variable = blanks[0]
    named = " (the michelangelo-config ConfigMap key)" if variable == "TRACKING_URI" else ""
    if used is None:
        store = (
            "on this remote task pod's disk (UF_REMOTE_RUN=1), lost with the pod"
            if remote_run
            else str(local_store)
        )
        raise ConfigurationError(
            f"{variable}{named} is set but blank, so no tracking URI is given and runs "
            f"would go to MLflow's local store {store}",
            variable=variable,
            fix=f"{SET_THE_URI}; or unset {variable}"
            + ("" if remote_run else " to track to the local store on purpose"),
        )
    warn(
        f"{variable}{named} is set but blank, so {used} applies; set {variable} to the "
        f"tracking server's URI, such as {EXAMPLE_URI}, or unset it",
        MichelangeloMlflowWarning,
    )


def _reject_unknown_variables(fields: Fields, environ: Mapping[str, str | None]) -> None:
    known = {var for var in all_variables(fields) if var.startswith(PREFIX)}
    for var in sorted(environ):
        if var.startswith(PREFIX) and var not in known:
            close = difflib.get_close_matches(var, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else "see the configuration docs"
            raise ConfigurationError(
                f"unknown environment variable {var}",
                variable=var,
                fix=f"{hint} (known: {', '.join(sorted(known))})",
            )


def warn_renamed(old: str, *, keyword: bool = False) -> None:
    """Warn that ``old`` is a deprecated name (quiet for the SDK's own use)."""
    new = RENAMED[old]
    what = f"Settings({old}=...)" if keyword else f"Settings.{old}"
    warn(
        f"{what} is deprecated: use {new} (its environment variable is unchanged)",
        DeprecationWarning,
        quiet_inside_package=True,
    )


# --- the tracking URI's credentials -----------------------------------------------------
def prepare_tracking_uri(
    fields: Fields, data: dict[str, Any], origins: dict[str, str]
) -> SecretStr | None:
    """Check the raw tracking URI's form and move its credentials out of it.

    http(s) credentials go to the basic-auth fields (refused when those are given
    too); a database URI's ``user:password@`` is returned, to be kept apart.
    """
    key = key_of(fields, data, "tracking_uri")
    if key is None or not isinstance(data[key], str):
        return None  # unset, or not a string: pydantic reports the type
    uri: str = data[key]
    if blank(uri):  # Settings.model_validate({"tracking_uri": " "}): an argument
        raise blank_argument(uri)
    variable = where(origins, "tracking_uri")
    check_uri_form(uri, variable)
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return None
    userinfo, _, host = parts.netloc.rpartition("@")
    data[key] = urlunsplit(parts._replace(netloc=host))
    if parts.scheme.split("+")[0] in DATABASES:
        return SecretStr(userinfo)
    if parts.scheme not in HTTP:
        data[key] = uri  # no credentials in this kind of URI: leave it as given
        return None
    _move_userinfo(fields, data, origins, userinfo, variable)
    return None


def _move_userinfo(
    fields: Fields, data: dict[str, Any], origins: dict[str, str], userinfo: str, variable: str
) -> None:
    """Put an http(s) URI's ``user:password`` into the basic-auth fields."""
    basic = [f for f in ("tracking_username", "tracking_password") if is_given(fields, data, f)]
    if basic:
        raise ConfigurationError(
            f"credentials are given twice: in the tracking URI ({variable}) and as "
            f"{' and '.join(variables(fields[f].validation_alias)[0] for f in basic)} (or the "
            "tracking_username=/tracking_password= arguments)",
            variable=variable,
            fix=f"keep one: remove user:password@ from {variable}, or unset "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD",
        )
    user, _, password = userinfo.partition(":")
    for name, secret in (("tracking_username", user), ("tracking_password", password)):
        for stale in (*variables(fields[name].validation_alias), name):
            data.pop(stale, None)
        data[name] = SecretStr(unquote(secret))
        origins[name] = origins.get("tracking_uri", "argument")


# --- reporting --------------------------------------------------------------------------
def translate(
    exc: ValidationError, fields: Fields, origins: Mapping[str, str]
) -> ConfigurationError:
    """One ``ConfigurationError`` for a ``ValidationError``, naming the value's origin."""
    errors = exc.errors()
    for error in errors:
        original = (error.get("ctx") or {}).get("error")
        if isinstance(original, ConfigurationError):
            return original
    error = errors[0]
    key = str(error["loc"][0]) if error["loc"] else ""
    field = field_of(fields, key)
    if field is None:
        return ConfigurationError(
            f"invalid setting {key!r}: {error['msg']}",
            variable=key or None,
            fix=f"pass one of the documented settings ({', '.join(fields)})",
        )
    info = fields[field]
    secret = SecretStr in (info.annotation, *get_args(info.annotation))
    given = error.get("input")
    shown = "" if secret or not isinstance(given, (str, int, float)) else f"={redact(str(given))!r}"
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


def describe(
    settings: BaseSettings, origins: Mapping[str, str], safe_tracking_uri: str
) -> tuple[SettingSource, ...]:
    """Every field of ``settings``, its value as it may be shown, and its origin."""
    rows = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "**********"
        elif name == "tracking_uri":
            shown = safe_tracking_uri
        elif isinstance(value, ByteSize):
            shown = value.human_readable(decimal=False)
        else:
            shown = "" if value is None else str(value)
        source = origins.get(name, "default")
        rows.append(SettingSource(name, shown, source, variables(field.validation_alias)))
    return tuple(rows)
