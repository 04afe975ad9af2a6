"""Shared helpers of the registration tests (imported by tests/test_registry*.py)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

SCHEMA_PATH = Path(__file__).parent.parent / "data" / "model-crd-schema.strict.json"
STRICT_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())


def assert_strict_valid(obj: dict[str, Any]) -> None:
    """Fail unless ``obj`` validates against the CRD's strict schema and the proto.

    Where michelangelo cannot be installed (Python 3.13), the test skips after the schema
    check: tests/conftest.py fails it instead on a Python that should have michelangelo.
    """
    from google.protobuf import json_format

    jsonschema.Draft7Validator(STRICT_SCHEMA).validate(obj)
    model_pb2 = pytest.importorskip("michelangelo.gen.api.v2.model_pb2")
    json_format.ParseDict({"metadata": obj["metadata"], "spec": obj["spec"]}, model_pb2.Model())


def unique(prefix: str = "model") -> str:
    """A registered model name no other test uses on the shared server."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- Kubernetes' name rules, written out independently of michelangelo_mlflow -------------
# As in k8s.io/apimachinery/pkg/util/validation/validation.go: the tests check the SDK
# against these, never against the SDK's own _registry._names.

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(f"{_DNS1123_LABEL}(\\.{_DNS1123_LABEL})*")
_QUALIFIED_NAME = re.compile("([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def k8s_is_dns1123_subdomain(value: str) -> bool:
    """IsDNS1123Subdomain: an object name; at most 253 characters."""
    return len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def k8s_is_label_value(value: str) -> bool:
    """IsValidLabelValue: empty, or a qualified name part of at most 63 characters."""
    return value == "" or (len(value) <= 63 and _QUALIFIED_NAME.fullmatch(value) is not None)


def k8s_is_qualified_name(value: str) -> bool:
    """IsQualifiedName: a label or annotation key, ``[prefix/]name``.

    The prefix, when there is a slash, must be a non-empty DNS-1123 subdomain; the
    name is 1 to 63 characters.
    """
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix or not k8s_is_dns1123_subdomain(prefix):
            return False
    else:
        return False
    return 0 < len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None
