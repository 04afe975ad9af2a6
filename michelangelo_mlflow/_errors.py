"""The one boundary where MLflow, ``requests`` and gRPC errors become ours.

Every call into MLflow that this SDK makes, and every MLflow error that escapes a
tracked run, passes through :func:`translate`. Each known MLflow error code maps to
one of our exception classes with the platform guide's resolution as its ``fix``;
the original exception is chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from michelangelo_mlflow.exceptions import (
    ArtifactStoreError,
    AuthenticationError,
    MichelangeloMlflowError,
    TrackingError,
    TrackingServerUnreachableError,
)

__all__ = [
    "FIX_ARTIFACTS",
    "FIX_CREDENTIALS",
    "FIX_PERMISSION",
    "FIX_UNREACHABLE",
    "from_foreign",
    "translate",
]

FIX_UNREACHABLE = (
    "check that this pod can reach the tracking server: run `michelangelo-mlflow doctor` "
    "here, or the platform guide's connectivity check (curl <tracking-uri>/health) from "
    "the compute namespace; check NetworkPolicy egress and firewall rules "
    "(`michelangelo-mlflow netpol` prints the policy)"
)
FIX_CREDENTIALS = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
    "at pipeline submission time: ma pipeline dev-run ... "
    "--env MLFLOW_TRACKING_USERNAME=<user> --env MLFLOW_TRACKING_PASSWORD=<password>"
)
FIX_PERMISSION = (
    "ask the tracking server's admin to grant this user EDIT on the experiment "
    "(or use credentials that have it)"
)
FIX_ARTIFACTS = (
    "the run was logged but its artifacts were not: confirm the task pod can reach the "
    "artifact store (S3/GCS) configured on the MLflow server, or run "
    "`michelangelo-mlflow doctor --artifacts`"
)

_UNREACHABLE_CODES = frozenset(
    {
        "TEMPORARILY_UNAVAILABLE",
        "SERVICE_UNDER_MAINTENANCE",
        "WORKSPACE_TEMPORARILY_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
    }
)


def from_foreign(
    exc: BaseException, *, tracking_uri: str, run_id: str | None = None
) -> MichelangeloMlflowError | None:
    """Our exception for a foreign one, or ``None`` when it is not a tracking failure.

    Args:
        exc: The exception raised by MLflow, ``requests`` or ``urllib3``.
        tracking_uri: The tracking URI, without credentials, for the message.
        run_id: The run being tracked, if any.

    Returns:
        The translated exception (not raised), or ``None`` for anything else.
    """
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MichelangeloMlflowError):
        return None
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return TrackingServerUnreachableError(
            f"could not reach the MLflow tracking server at {tracking_uri}: {_first_line(exc)}",
            tracking_uri=tracking_uri,
            fix=FIX_UNREACHABLE,
        )
    if not isinstance(exc, MlflowException):
        return None
    code = str(exc.error_code)
    text = _first_line(exc)
    if code == "ENDPOINT_NOT_FOUND" and "logged-models" in str(exc):
        from michelangelo_mlflow._versions import skew_error

        return skew_error(tracking_uri, cause=text)
    if code == "UNAUTHENTICATED":
        return AuthenticationError(
            f"the MLflow tracking server at {tracking_uri} rejected the credentials "
            f"(HTTP 401): {text}",
            tracking_uri=tracking_uri,
            fix=FIX_CREDENTIALS,
        )
    if code in {"PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"}:
        return AuthenticationError(
            f"the MLflow tracking server at {tracking_uri} denied this request "
            f"(PERMISSION_DENIED): {text}",
            tracking_uri=tracking_uri,
            fix=FIX_PERMISSION,
        )
    if code in _UNREACHABLE_CODES or (
        code == "INTERNAL_ERROR" and ("Max retries exceeded" in text or "error responses" in text)
    ):
        return TrackingServerUnreachableError(
            f"the MLflow tracking server at {tracking_uri} is not answering: {text}",
            tracking_uri=tracking_uri,
            fix=FIX_UNREACHABLE,
        )
    error_class = ArtifactStoreError if _is_artifact_failure(exc) else TrackingError
    return error_class(
        f"MLflow call failed on {tracking_uri}"
        f"{f' in run {run_id}' if run_id else ''} ({code}): {text}",
        tracking_uri=tracking_uri,
        run_id=run_id,
        error_code=code,
        fix=FIX_ARTIFACTS if error_class is ArtifactStoreError else None,
    )


@contextmanager
def translate(tracking_uri: str, *, run_id: str | None = None) -> Iterator[None]:
    """Raise our typed error, chained, for any MLflow or ``requests`` error in the block.

    Args:
        tracking_uri: The tracking URI, without credentials, for messages.
        run_id: The run being tracked, if any.

    Yields:
        Nothing.
    """
    try:
        yield
    except Exception as exc:
        ours = from_foreign(exc, tracking_uri=tracking_uri, run_id=run_id)
        if ours is None:
            raise
        raise ours from exc


def _is_artifact_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "artifact" in text and any(
        marker in text for marker in ("s3", "gcs", "upload", "download", "bucket", "storage")
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

