"""Turn user values into MLflow params and tags: flattened, redacted, within limits.

- Mappings, dataclasses and pydantic models are flattened into dotted keys
  (``{"optimizer": {"lr": 0.1}}`` → ``optimizer.lr``).
- Keys that name a secret (ending in password, secret, token, api_key, access_key,
  private_key, credential, …; see :func:`is_secret_key`) are replaced by
  :data:`REDACTED`, while hyperparameters such as ``pad_token_id``,
  ``token_pattern`` or ``auth_type`` keep their values; in every value, a configured
  secret, the password of a URL (``postgresql://etl:<redacted>@db/x``) and a
  ``password=…`` fragment of a connection string are redacted.
- Keys must be strings; a cycle, or a value whose ``str()`` fails, is an error that
  names the key path, raised before any run is created.
- Keys longer than MLflow's 250 characters are an error; values longer than MLflow's
  limit (6,000 characters for params, 8,000 for tags) are cut to the limit, ending in
  :data:`TRUNCATED`, with a warning.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowWarning

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "REDACTED",
    "TRUNCATED",
    "ParamTagWriter",
    "flatten",
    "is_nested",
    "is_secret_key",
    "prepare",
    "redact_text",
    "redact_value",
]

REDACTED = "<redacted>"
"""What a secret-looking param or tag value is replaced with."""

TRUNCATED = "...<truncated>"
"""The end of a value cut to MLflow's length limit."""

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000

_SECRET_LAST = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "credential",
    "credentials", "authorization", "cookie", "dsn", "pat",
})  # fmt: skip
"""A key whose last word is one of these holds a secret (``db.password``, ``hf_token``)."""

_SECRET_KEY_OF = frozenset({
    "api", "access", "secret", "private", "signing", "session", "encryption", "master",
    "account", "shared", "client",
})  # fmt: skip
"""``<word>_key`` holds a secret for these words (``api_key``, ``AWS_SECRET_ACCESS_KEY``)."""

_SECRET_PAIRS = frozenset({("connection", "string"), ("client", "secret"), ("sas", "url")})

_NOT_A_SECRET_TOKEN = frozenset({
    "pad", "eos", "bos", "unk", "sep", "cls", "mask", "start", "end", "begin", "stop",
    "special", "decoder", "image", "audio", "video", "boi", "eoi", "boa", "eoa", "sentinel",
    "prefix", "suffix", "middle", "fim", "think", "tool", "system", "user", "assistant",
})  # fmt: skip
"""``<word>_token`` names a tokenizer's special token (``pad_token = "<pad>"``), not a secret."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:)(?P<secret>[^\s@/]+)(?=@)"
)
_DSN_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token)\s*[=:]\s*)(?P<secret>'[^']*'|\"[^\"]*\"|[^\s;&,]+)",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    """Whether a param or tag key names a secret.

    The key is split into words (dots, dashes, underscores, camelCase) and only its
    end is looked at, so that hyperparameters that merely mention a secret word keep
    their values: ``db.password``, ``hf_token``, ``apiKey`` and
    ``AWS_SECRET_ACCESS_KEY`` are secrets; ``pad_token``, ``pad_token_id``,
    ``max_tokens``, ``token_pattern``, ``tokenizer`` and ``auth_type`` are not.

    Example:
        >>> is_secret_key("warehouse.password"), is_secret_key("pad_token_id")
        (True, False)
    """
    words = [w for w in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", key).lower()) if w]
    if not words:
        return False
    last, before = words[-1], words[-2] if len(words) > 1 else ""
    if last == "token":
        return before not in _NOT_A_SECRET_TOKEN
    if last in _SECRET_LAST:
        return True
    if last == "key":
        return before in _SECRET_KEY_OF
    return (before, last) in _SECRET_PAIRS


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret, URL password and ``password=`` value redacted.

    Example:
        >>> redact_text("postgresql://etl:pw@db/x; host=db password=pw2", ())
        'postgresql://etl:<redacted>@db/x; host=db password=<redacted>'
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    return _DSN_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)


def redact_value(key: str, value: str, secrets: Iterable[str]) -> str:
    """The value to store under ``key``, redacted.

    :data:`REDACTED` for a secret-looking key, else ``value`` with configured secrets,
    URL passwords and ``password=`` values redacted.

    Example:
        >>> redact_value("db.password", "hunter2", ()), redact_value("lr", "0.1", ())
        ('<redacted>', '0.1')
    """
    return REDACTED if is_secret_key(key) else redact_text(value, secrets)


def flatten(values: Any, *, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings, dataclasses and pydantic models into dotted keys.

    Args:
        values: A mapping (or dataclass instance, or pydantic model) of values.
        prefix: Prepended to every key, followed by a dot.

    Returns:
        A flat mapping of dotted keys to leaf values.

    Raises:
        ConfigurationError: When two inputs flatten to the same key, a key is not a
            string, or the values contain themselves.

    Example:
        >>> flatten({"model": {"depth": 6}, "lr": 0.1})
        {'model.depth': 6, 'lr': 0.1}
    """
    return _flatten(values, prefix, ())


def _flatten(values: Any, prefix: str, seen: tuple[int, ...]) -> dict[str, Any]:
    if id(values) in seen:
        raise ConfigurationError(
            f"the value at {prefix or 'the top level'!r} contains itself (a cycle), so it "
            "cannot be logged as params or tags",
            variable=prefix or None,
            fix="pass plain nested dicts without references back to a parent",
        )
    flat: dict[str, Any] = {}
    for key, value in _items(values, prefix):
        if not isinstance(key, str):
            path = f"{prefix}.{key!r}" if prefix else repr(key)
            raise ConfigurationError(
                f"key {path} is a {type(key).__name__}: MLflow param and tag keys are strings",
                variable=path,
                fix=f"use the string key {str(key)!r} instead",
            )
        full = f"{prefix}.{key}" if prefix else key
        nested = _flatten(value, full, (*seen, id(values))) if is_nested(value) else {full: value}
        for nested_key, leaf in nested.items():
            if nested_key in flat:
                raise ConfigurationError(
                    f"two values flatten to the same param key {nested_key!r}",
                    variable=nested_key,
                    fix="rename one of them: nested keys are joined with dots",
                )
            flat[nested_key] = leaf
    return flat


def prepare(
    values: Mapping[str, Any],
    *,
    kind: str,
    secrets: Iterable[str] = (),
) -> dict[str, str]:
    """Flatten, stringify, redact and bound values for MLflow.

    Args:
        values: Param or tag values, possibly nested.
        kind: ``"param"`` or ``"tag"``: which value limit applies.
        secrets: Secret values to redact wherever they occur.

    Returns:
        MLflow-ready string values.

    Raises:
        ConfigurationError: When a key is empty or longer than MLflow's 250 characters.
    """
    limit = MAX_PARAM_VALUE_LENGTH if kind == "param" else MAX_TAG_VALUE_LENGTH
    secrets = tuple(secrets)
    prepared: dict[str, str] = {}
    for key, value in flatten(values).items():
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ConfigurationError(
                f"{kind} key {key[:60]!r}{'…' if len(key) > 60 else ''} is "
                f"{'empty' if not key else f'{len(key)} characters long'}; "
                f"MLflow accepts 1 to {MAX_KEY_LENGTH}",
                variable=key[:60],
                fix=f"use a shorter {kind} key",
            )
        text = redact_value(key, _text(key, value), secrets)
        if len(text) > limit:
            warnings.warn(
                f"{kind} {key!r} is {len(text)} characters long; MLflow keeps at most "
                f"{limit}, so it was cut and ends in {TRUNCATED!r} (log long values as "
                "an artifact with mlflow.log_text instead)",
                MichelangeloMlflowWarning,
                stacklevel=3,
            )
            text = text[: limit - len(TRUNCATED)] + TRUNCATED
        prepared[key] = text
    return prepared


def _items(values: Any, prefix: str = "") -> Iterable[tuple[Any, Any]]:
    if isinstance(values, Mapping):
        return values.items()
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        return ((f.name, getattr(values, f.name)) for f in dataclasses.fields(values))
    dump = getattr(values, "model_dump", None)
    if callable(dump):
        return dict(dump()).items()
    raise ConfigurationError(
        f"cannot log a {type(values).__name__} as params or tags"
        f"{f' (at {prefix!r})' if prefix else ''}: expected a mapping, a dataclass or a "
        "pydantic model",
        variable=prefix or None,
        fix='pass a dict of names to values, such as {"lr": 0.1}',
    )


def is_nested(value: Any) -> bool:
    """Whether ``value`` is flattened into dotted keys (mapping, dataclass, pydantic)."""
    return (
        isinstance(value, Mapping)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
        or callable(getattr(value, "model_dump", None))
    )


def _text(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception as exc:
        raise ConfigurationError(
            f"the value of {key!r} cannot be turned into text: str() raised "
            f"{type(exc).__name__}: {exc}",
            variable=key,
            fix="log a plain value (number, string) or its string form under this key",
        ) from exc


class ParamTagWriter:
    """Writes params and tags to one run: prepared (flattened, redacted, bounded) first.

    Writes go through ``MlflowClient.log_batch``, so for a tracked run they take the
    run's spool like every other record (and MLflow chunks them within its limits).

    Args:
        client: An MLflow client of the run's tracking server.
        run_id: The run.
        secrets: Secret values to redact wherever they occur.
    """

    def __init__(self, client: MlflowClient, run_id: str, secrets: tuple[str, ...]) -> None:
        self.client = client
        self.run_id = run_id
        self.secrets = secrets

    def log_params(
        self, values: Mapping[str, Any], *, existing: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Log params; those already logged with the same value are skipped.

        Args:
            values: The params, possibly nested.
            existing: The run's params as just read from the server, when the caller
                has them (saves a round trip); by default they are read.

        Returns:
            The params as logged (flattened, redacted, bounded).

        Raises:
            ConfigurationError: When a param already has a different value (MLflow
                params are immutable).
        """
        from mlflow.entities import Param

        prepared = prepare(values, kind="param", secrets=self.secrets)
        if existing is None:
            existing = self.client.get_run(self.run_id).data.params if prepared else {}
        changed = sorted(k for k, v in prepared.items() if k in existing and existing[k] != v)
        if changed:
            raise ConfigurationError(
                f"run {self.run_id} already has params {', '.join(changed)} with other "
                "values, and MLflow params cannot change",
                variable=changed[0],
                fix="log the new values under other keys, or start a new run",
            )
        new = [Param(k, v) for k, v in prepared.items() if k not in existing]
        if new:
            self.client.log_batch(self.run_id, params=new)
        return prepared

    def set_tags(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Set tags (flattened, redacted, bounded).

        Returns:
            The tags as set.
        """
        from mlflow.entities import RunTag

        prepared = prepare(values, kind="tag", secrets=self.secrets)
        if prepared:
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in prepared.items()])
        return prepared

    def delete_tags(self, keys: Iterable[str]) -> None:
        """Delete tags of the run."""
        for key in keys:
            self.client.delete_tag(self.run_id, key)
