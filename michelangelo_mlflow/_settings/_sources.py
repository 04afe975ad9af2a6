"""Where each value comes from: the declared sources, variable names and origins.

Values come from two sources, in this order (the first that has a value wins), then
from the field's default:

1. the keyword arguments of ``Settings(...)`` (``None``, and a blank tracking URI, mean
   "not given");
2. the environment variables named in the field's ``validation_alias``, in order. This
   SDK's own variables are named by an alias generator (:func:`our_variable`):
   ``MICHELANGELO_MLFLOW_`` plus the field name in upper case.

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

from michelangelo_mlflow._settings._uri import DATABASES, HTTP, check_uri_form, redact
from michelangelo_mlflow._settings._warnings import warn
from michelangelo_mlflow.exceptions import ConfigurationError

Fields = Mapping[str, FieldInfo]
"""``Settings.model_fields``: every field's declaration, by name."""

PREFIX = "MICHELANGELO_MLFLOW_"
"""Prefix of this SDK's own environment variables."""

ORIGINS = "__michelangelo_mlflow_origins__"
"""Key under which the sources pass {field: "argument" or variable} to validation."""

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
    """The keyword arguments; ``None`` (and a blank tracking URI) mean "not given".

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
            if value is None or (field_of(fields, name) == "tracking_uri" and blank(value)):
                continue
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
    unknown ``MICHELANGELO_MLFLOW_*`` variable, skips a blank tracking URI (unset), and
    records which variable supplied each field.
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

    def __call__(self) -> dict[str, Any]:
        _reject_unknown_variables(self.settings_cls.model_fields, self.environ)
        data: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, variable, _ = self.get_field_value(field, name)
            if value is not None:
                data[variables(field.validation_alias)[0]] = value  # keyed as _Arguments
                self.origins[name] = variable
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


def take_origins(fields: Fields, data: dict[str, Any]) -> dict[str, str]:
    """Remove the sources' record from ``data``; what it lacks was given as arguments.

    ``Settings.model_validate({...})`` passes no record: its keys count as arguments.
    """
    origins: dict[str, str] = dict(data.pop(ORIGINS, None) or {})
    for name in fields:
        if name not in origins and key_of(fields, data, name) is not None:
            origins[name] = "argument"
    return origins


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
    if blank(uri):  # Settings.model_validate({"tracking_uri": " "}): unset, as from a source
        del data[key]
        origins.pop("tracking_uri", None)
        return None
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
