"""Build the Michelangelo ``Model`` object for one MLflow model version.

The object is a plain dict in its Kubernetes form: ``apiVersion``, ``kind``,
``metadata`` and a ``spec`` with lowerCamelCase keys and enum names as strings, the
form ``kubectl apply`` and the CRD's strict schema accept. The gRPC backend converts
the same dict to the official protobuf message.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from michelangelo_mlflow._registry import _names
from michelangelo_mlflow._tags import (
    A_MODEL_URI,
    A_NAME,
    A_RUN_ID,
    A_SOURCE,
    A_TRACKING_URI,
    A_VERSION,
    ANNOTATION_PREFIX,
    L_MANAGED_BY,
    MANAGED_BY,
)
from michelangelo_mlflow.exceptions import MissingDependencyError, RegistrationError

__all__ = [
    "ANNOTATION_PREFIX",
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ModelObjectSpec",
    "build_model_object",
    "from_proto",
    "identity",
    "registry_uri",
    "same_registration",
    "to_proto",
]

GROUP = "michelangelo.api"
VERSION = "v2"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Model"
PLURAL = "models"


_IDENTITY = (A_NAME, A_VERSION, A_RUN_ID)


@dataclass(frozen=True)
class ModelObjectSpec:
    """Everything the Model object is built from (all validated beforehand).

    Attributes:
        namespace: Michelangelo project.
        model_name: The Michelangelo model name; the object is ``<model_name>-<version>``.
        mlflow_name: The MLflow registered model name.
        version: The MLflow model version.
        run_id: The MLflow run, or ``""`` when the version has none.
        source: The MLflow version's ``source``.
        artifact_uri: Where the version's files are stored.
        tracking_uri: The tracking URI without credentials.
    """

    namespace: str
    model_name: str
    mlflow_name: str
    version: str
    run_id: str
    source: str
    artifact_uri: str
    tracking_uri: str
    deployable_artifact_uri: str | None = None
    kind: str | None = None
    package_type: str | None = None
    algorithm: str | None = None
    training_framework: str | None = None
    description: str | None = None
    owner: str | None = None
    pipeline_run: str | None = None
    quality_scores: Sequence[tuple[str, float]] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def object_name(self) -> str:
        """``<model_name>-<version>``, the serving convention."""
        return f"{self.model_name}-{self.version}"


def build_model_object(spec: ModelObjectSpec) -> dict[str, Any]:
    """The Model object for one MLflow version, in its Kubernetes (camelCase) form.

    Args:
        spec: The validated inputs.

    Returns:
        A new dict with ``apiVersion``, ``kind``, ``metadata`` and ``spec``.

    Example:
        >>> obj = build_model_object(ModelObjectSpec(
        ...     namespace="ml-team", model_name="fraud", mlflow_name="fraud", version="3",
        ...     run_id="abc", source="models:/m-1", artifact_uri="s3://b/m-1",
        ...     tracking_uri="http://mlflow:5000"))
        >>> obj["metadata"]["name"], obj["spec"]["revisionId"]
        ('fraud-3', 3)
    """
    labels = {L_MANAGED_BY: MANAGED_BY}
    for key, value in (
        (A_NAME, spec.mlflow_name),
        (A_VERSION, spec.version),
        (A_RUN_ID, spec.run_id),
    ):
        if value and _names.is_label_value(value):
            labels[key] = value
    labels.update(spec.labels)
    annotations = {
        A_TRACKING_URI: spec.tracking_uri,
        A_NAME: spec.mlflow_name,
        A_VERSION: spec.version,
        A_RUN_ID: spec.run_id,
        A_SOURCE: spec.source,
        A_MODEL_URI: f"models:/{spec.mlflow_name}/{spec.version}",
    }
    body: dict[str, Any] = {
        "revisionId": int(spec.version),
        "modelArtifactUri": [spec.artifact_uri],
        "source": "mlflow",
    }
    if spec.deployable_artifact_uri:
        body["deployableArtifactUri"] = [spec.deployable_artifact_uri]
    optional = {
        "kind": spec.kind,
        "packageType": spec.package_type,
        "algorithm": spec.algorithm,
        "trainingFramework": spec.training_framework,
        "description": spec.description,
    }
    body.update({key: value for key, value in optional.items() if value})
    if spec.owner:
        body["owner"] = {"name": spec.owner}
    if spec.pipeline_run:
        body["sourcePipelineRun"] = {"namespace": spec.namespace, "name": spec.pipeline_run}
    if spec.quality_scores:
        body["qualityScores"] = [
            {
                "name": name,
                "source": "mlflow",
                "scoping": "run",
                "value": float(value),
                "primary": index == 0,
            }
            for index, (name, value) in enumerate(spec.quality_scores)
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.object_name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": body,
    }


def identity(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The registration a Model object records: MLflow name, version and run id."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return tuple(str(annotations.get(key, "")) for key in _IDENTITY)


def same_registration(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether an existing Model object records the same MLflow version and run."""
    mine = identity(wanted)
    return bool(mine[1]) and identity(existing) == mine


def registry_uri(namespace: str, model_name: str, version: str) -> str:
    """``models:/<namespace>/<model>/<version>``, the official SDK's registry URI form."""
    return f"models:/{namespace}/{model_name}/{version}"


def to_proto(obj: Mapping[str, Any]) -> Any:
    """The official ``model_pb2.Model`` message for a Model object.

    ``json_format.ParseDict`` rejects unknown fields and unknown enum names, so this
    doubles as validation of the object outside this repository's test suite.

    Raises:
        MissingDependencyError: The ``michelangelo`` extra is not installed.
        RegistrationError: The object does not fit the official message.
    """
    try:
        from google.protobuf import json_format
        from michelangelo.gen.api.v2 import model_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            "the Michelangelo Model message (apiserver registry backend)",
            "michelangelo-mlflow[michelangelo]",
        ) from exc
    message = {key: copy.deepcopy(obj[key]) for key in ("metadata", "spec") if key in obj}
    try:
        return json_format.ParseDict(message, model_pb2.Model())
    except json_format.ParseError as exc:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise RegistrationError(
            f"the Model object {name!r} does not match the official Model message: {exc}",
            model_name=str(name),
            fix="this is a bug in michelangelo-mlflow or a version skew with the "
            "michelangelo package; please report it with this message",
        ) from exc


def from_proto(message: Any) -> dict[str, Any]:
    """The Kubernetes (camelCase) form of an official ``model_pb2.Model`` message."""
    from google.protobuf import json_format

    data: dict[str, Any] = json_format.MessageToDict(message)
    data.pop("typeMeta", None)
    data.pop("status", None)
    return {"apiVersion": API_VERSION, "kind": KIND, **data}
