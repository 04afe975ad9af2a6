"""Missing and broken installs: the requirement line a user should add.

``import mlflow`` fails when MLflow is not in the task image, and also when one of its
own dependencies is missing; an artifact store needs its client library. Each known
top-level module is mapped to the feature that needs it and the exact requirement
line, so the error says what to ``pip install``.

A leaf: it imports only :mod:`michelangelo_mlflow.exceptions`, so both the error
translation (``_errors``) and the version checks (``_versions``) can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

from michelangelo_mlflow.exceptions import MissingDependencyError

__all__ = ["REQUIREMENTS", "import_mlflow", "missing_dependency"]

REQUIREMENTS: Mapping[str, tuple[str, str]] = {
    "mlflow": ("MLflow tracking", "mlflow>=2.22,<4"),
    "databricks": ("MLflow (import mlflow needs databricks-sdk)", "databricks-sdk"),
    "sklearn": ("mlflow.sklearn", "scikit-learn"),
    "boto3": ("an S3 artifact store", "boto3"),
    "botocore": ("an S3 artifact store", "boto3"),
    "google": ("a GCS artifact store", "google-cloud-storage"),
    "azure": ("an Azure Blob artifact store", "azure-storage-blob azure-identity"),
}
"""Top-level modules a tracked run needs, mapped to (feature, requirement line)."""


def import_mlflow() -> ModuleType:
    """``import mlflow``, with a broken or missing install as :class:`MissingDependencyError`.

    ``import mlflow`` fails when MLflow is not in the task image, and also when
    ``databricks-sdk`` is missing; either way the error names the requirement line.

    Returns:
        The ``mlflow`` module.

    Raises:
        MissingDependencyError: With the exact requirement line to add.
    """
    try:
        import mlflow
        import mlflow.tracking
    except ModuleNotFoundError as exc:
        ours = missing_dependency(exc)
        if ours is None:
            raise
        raise ours from exc
    return mlflow


def missing_dependency(exc: ModuleNotFoundError) -> MissingDependencyError | None:
    """Our error for a missing module a tracked run needs (MLflow, its SDK, a store's client).

    Returns:
        ``None`` for a module this SDK does not know (the caller's own import).
    """
    top = (exc.name or "").split(".")[0]
    if top not in REQUIREMENTS:
        return None
    feature, requirement = REQUIREMENTS[top]
    return MissingDependencyError(f"{feature} (module {exc.name!r})", requirement)
