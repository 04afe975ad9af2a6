"""Kubernetes name and label rules, and the Model CRD's enum names.

Everything here works without the optional ``michelangelo`` package: the enum names
are the ones the ``models.michelangelo.api`` CRD accepts (its ``spec.kind`` and
``spec.packageType`` enums).
"""

from __future__ import annotations

import re

from michelangelo_mlflow.exceptions import ConfigurationError

__all__ = [
    "MODEL_KINDS",
    "PACKAGE_TYPES",
    "check_artifact_uri",
    "check_label",
    "check_namespace",
    "check_object_name",
    "is_dns_label",
    "is_label_value",
    "is_qualified_name",
    "is_subdomain",
    "normalize_kind",
    "normalize_package_type",
    "suggest_name",
]

MODEL_KINDS = (
    "MODEL_KIND_CUSTOM",
    "MODEL_KIND_REGRESSION",
    "MODEL_KIND_BINARY_CLASSIFICATION",
    "MODEL_KIND_MULTICLASS_CLASSIFICATION",
    "MODEL_KIND_CLUSTERING",
    "MODEL_KIND_LLM_COMPLETION",
    "MODEL_KIND_LLM_CHAT_COMPLETION",
    "MODEL_KIND_LLM_EMBEDDING",
)
"""``spec.kind`` values (``MODEL_KIND_INVALID`` is deliberately not accepted)."""

PACKAGE_TYPES = (
    "DEPLOYABLE_MODEL_PACKAGE_TYPE_SPARK_PIPELINE",
    "DEPLOYABLE_MODEL_PACKAGE_TYPE_TRITON",
    "DEPLOYABLE_MODEL_PACKAGE_TYPE_RAW",
    "DEPLOYABLE_MODEL_PACKAGE_TYPE_MOBILE",
)
"""``spec.packageType`` values (``…_INVALID`` is deliberately not accepted)."""

MAX_NAME = 253
MAX_LABEL = 63

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_DNS_LABEL_RE = re.compile(_DNS_LABEL)
_LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_NAME_PART_RE = _LABEL_VALUE_RE


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is a DNS-1123 label (a valid Kubernetes namespace)."""
    return len(value) <= MAX_LABEL and _DNS_LABEL_RE.fullmatch(value) is not None


def is_subdomain(value: str) -> bool:
    """Whether ``value`` is a DNS-1123 subdomain (a valid Kubernetes object name)."""
    return len(value) <= MAX_NAME and _SUBDOMAIN_RE.fullmatch(value) is not None


def is_label_value(value: str) -> bool:
    """Whether ``value`` is a valid Kubernetes label value (empty is valid)."""
    return value == "" or (len(value) <= MAX_LABEL and _LABEL_VALUE_RE.fullmatch(value) is not None)


def is_qualified_name(key: str) -> bool:
    """Whether ``key`` is a valid label or annotation key (``[prefix/]name``)."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_subdomain(prefix):  # "/name": an empty prefix is not one
        return False
    return 0 < len(name) <= MAX_LABEL and _NAME_PART_RE.fullmatch(name) is not None


def suggest_name(value: str) -> str:
    """A DNS-1123 name close to ``value``: lowercase, runs of other characters as ``-``."""
    lowered = re.sub(r"[^a-z0-9.-]+", "-", value.lower())
    lowered = re.sub(r"-{2,}", "-", lowered)
    # Every dot-separated label must start and end with a letter or digit.
    labels = [label.strip("-") for label in lowered.split(".")]
    joined = ".".join(label for label in labels if label)
    return joined[: MAX_NAME - 11].strip("-.") or "model"


def check_object_name(model: str, *, argument: str) -> None:
    """Reject a model name whose Model objects ``<model>-<version>`` would be invalid.

    Args:
        model: The name the Model objects are prefixed with.
        argument: The argument it came from, for the message.

    Raises:
        ConfigurationError: The name is not a DNS-1123 subdomain, or too long to
            carry a version suffix.
    """
    # Ten digits cover any MLflow version number; the dash makes eleven characters.
    probe = f"{model}-1"
    if is_subdomain(probe) and len(model) <= MAX_NAME - 11:
        return
    raise ConfigurationError(
        f"the model name {model!r} cannot name a Michelangelo Model: Model objects are "
        f"named <model>-<version> and must be DNS-1123 names (lowercase letters, digits, "
        f"'-' and '.', starting and ending with a letter or digit, at most "
        f"{MAX_NAME - 11} characters before the version)",
        variable=argument,
        fix=f"pass michelangelo_name={suggest_name(model)!r} (the MLflow name can stay as "
        "it is), or register under a DNS-1123 name",
    )


def check_namespace(namespace: str) -> None:
    """Reject a namespace that is not a DNS-1123 label.

    Raises:
        ConfigurationError: Naming ``MA_NAMESPACE`` and the fix.
    """
    if is_dns_label(namespace):
        return
    raise ConfigurationError(
        f"the Michelangelo namespace {namespace!r} is not a valid Kubernetes namespace "
        "(lowercase letters, digits and '-', at most 63 characters)",
        variable="MA_NAMESPACE",
        fix="pass namespace= the Michelangelo project name (as in `ma project get`), or "
        "set MA_NAMESPACE",
    )


def check_label(key: str, value: str) -> None:
    """Reject a label whose key or value Kubernetes would refuse.

    Raises:
        ConfigurationError: Naming the label and the rule it breaks.
    """
    if not is_qualified_name(key):
        raise ConfigurationError(
            f"label key {key!r} is not a valid Kubernetes label key ([prefix/]name, name "
            "at most 63 characters of letters, digits, '-', '_' and '.')",
            variable="labels",
            fix="rename the label, or pass the value in description= instead",
        )
    if not is_label_value(value):
        raise ConfigurationError(
            f"label {key}={value!r} has an invalid value (at most 63 characters of letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit)",
            variable="labels",
            fix="shorten or clean the value, or record it as an MLflow tag (tags=) instead",
        )


_BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "abfss", "wasbs", "hdfs", "r2", "b2", "oci"})


def check_artifact_uri(value: object, *, argument: str) -> None:
    """Refuse a URI that names no location (``s3://``, ``"::not a uri::"``, blanks).

    Raises:
        ConfigurationError: Naming the argument and the form it takes.

    Example:
        >>> check_artifact_uri("s3://bucket/fraud/3/", argument="deployable_artifact_uri")
    """
    from urllib.parse import urlsplit

    reason = None
    if not isinstance(value, str):
        reason = f"is a {type(value).__name__}, not a string"
        parts = urlsplit("")
    else:
        parts = urlsplit(value.strip())
    if reason is not None:
        pass
    elif any(c.isspace() for c in str(value)) or not str(value).strip():
        reason = "is empty or has spaces"
    elif not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]+", parts.scheme):
        reason = "has no scheme (such as s3:// or gs://)"
    elif parts.scheme in _BUCKET_SCHEMES and not parts.netloc:
        reason = f"names no bucket or account after {parts.scheme}://"
    elif not (parts.netloc or parts.path.strip("/")):
        reason = "names no location"
    if reason is not None:
        raise ConfigurationError(
            f"{argument}={value!r} {reason}",
            variable=argument,
            fix=f"pass the URI of the packaged model, such as {argument}="
            '"s3://bucket/models/fraud-detector/3/"',
        )


def normalize_kind(kind: str) -> str:
    """The CRD enum name for a model kind given as its name or a short form.

    Args:
        kind: ``MODEL_KIND_BINARY_CLASSIFICATION``, ``binary_classification`` or
            ``binary-classification`` (any case).

    Returns:
        The enum name, such as ``MODEL_KIND_BINARY_CLASSIFICATION``.

    Raises:
        ConfigurationError: Unknown kind; the message lists the accepted ones.
    """
    return _normalize(kind, "MODEL_KIND_", MODEL_KINDS, argument="kind")


def normalize_package_type(package_type: str) -> str:
    """The CRD enum name for a deployable package type (``triton``, ``raw`` …).

    Raises:
        ConfigurationError: Unknown package type; the message lists the accepted ones.
    """
    return _normalize(
        package_type, "DEPLOYABLE_MODEL_PACKAGE_TYPE_", PACKAGE_TYPES, argument="package_type"
    )


def _normalize(value: str, prefix: str, choices: tuple[str, ...], *, argument: str) -> str:
    key = value.strip().upper().replace("-", "_")
    for candidate in (key, prefix + key):
        if candidate in choices:
            return candidate
    import difflib

    names = [choice.removeprefix(prefix).lower() for choice in choices]
    close = difflib.get_close_matches(key.lower(), names, n=1, cutoff=0.3)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigurationError(
        f"unknown {argument} {value!r}",
        variable=argument,
        fix=f"{hint}use one of: {', '.join(names)} (or the full enum name, such as {choices[0]})",
    )
