"""Turn user values into MLflow params and tags: flattened, redacted, within limits.

- Mappings, dataclasses and pydantic models are flattened into dotted keys
  (``{"optimizer": {"lr": 0.1}}`` → ``optimizer.lr``).
- Keys that look like secrets (password, secret, token, api_key, access_key,
  private_key, credential, …) and values that contain a configured secret are
  replaced by :data:`REDACTED`.
- Keys longer than MLflow's 250 characters are an error; values longer than MLflow's
  limit (6,000 characters for params, 8,000 for tags) are cut to the limit, ending in
  :data:`TRUNCATED`, with a warning.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowWarning

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "REDACTED",
    "TRUNCATED",
    "flatten",
    "is_nested",
    "is_secret_key",
    "prepare",
    "redact_text",
]

REDACTED = "<redacted>"
"""What a secret-looking param or tag value is replaced with."""

TRUNCATED = "...<truncated>"
"""The end of a value cut to MLflow's length limit."""

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000

_SECRET_WORDS = (
    "password|passwd|pwd|passphrase|secret|token|api_?key|access_?key|secret_?key|"
    "private_?key|signing_?key|session_?key|credential|credentials|auth|authorization|"
    "bearer|cookie|dsn|connection_?string|sas"
)
_SECRET_KEY = re.compile(rf"(?:^|_)(?:{_SECRET_WORDS})(?:_|$)")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(key: str) -> bool:
    """Whether a param or tag key looks like it holds a secret.

    Each dotted, dashed or camelCase part of the key is compared word by word, so
    ``db.password``, ``apiKey`` and ``AWS_SECRET_ACCESS_KEY`` match while
    ``max_tokens`` and ``tokenizer`` do not.

    Example:
        >>> is_secret_key("warehouse.password"), is_secret_key("max_tokens")
        (True, False)
    """
    normalized = re.sub(r"[^a-z0-9]+", "_", _CAMEL.sub("_", key).lower())
    return bool(_SECRET_KEY.search(normalized))


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by :data:`REDACTED`."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def flatten(values: Any, *, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings, dataclasses and pydantic models into dotted keys.

    Args:
        values: A mapping (or dataclass instance, or pydantic model) of values.
        prefix: Prepended to every key, followed by a dot.

    Returns:
        A flat mapping of dotted keys to leaf values.

    Raises:
        ConfigurationError: When two inputs flatten to the same key.

    Example:
        >>> flatten({"model": {"depth": 6}, "lr": 0.1})
        {'model.depth': 6, 'lr': 0.1}
    """
    flat: dict[str, Any] = {}
    for key, value in _items(values):
        full = f"{prefix}.{key}" if prefix else str(key)
        nested = flatten(value, prefix=full) if is_nested(value) else {full: value}
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
        text = REDACTED if is_secret_key(key) else redact_text(_text(value), secrets)
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


def _items(values: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(values, Mapping):
        return values.items()
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        return ((f.name, getattr(values, f.name)) for f in dataclasses.fields(values))
    dump = getattr(values, "model_dump", None)
    if callable(dump):
        return dict(dump()).items()
    raise ConfigurationError(
        f"cannot log a {type(values).__name__} as params: expected a mapping, a "
        "dataclass or a pydantic model",
        fix="pass a dict of param names to values",
    )


def is_nested(value: Any) -> bool:
    """Whether ``value`` is flattened into dotted keys (mapping, dataclass, pydantic)."""
    return (
        isinstance(value, Mapping)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
        or callable(getattr(value, "model_dump", None))
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
