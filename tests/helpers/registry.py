"""Shared helpers of the registration tests (imported by tests/test_registry*.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).parent.parent / "data" / "model-crd-schema.strict.json"
STRICT_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())


def assert_strict_valid(obj: dict[str, Any]) -> None:
    """Fail unless ``obj`` validates against the CRD's strict schema and the proto."""
    from google.protobuf import json_format
    from michelangelo.gen.api.v2 import model_pb2

    jsonschema.Draft7Validator(STRICT_SCHEMA).validate(obj)
    json_format.ParseDict({"metadata": obj["metadata"], "spec": obj["spec"]}, model_pb2.Model())


def unique(prefix: str = "model") -> str:
    """A registered model name no other test uses on the shared server."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
