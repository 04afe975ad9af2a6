"""The one boundary where MLflow, ``requests`` and artifact-store errors become ours.

Every call into MLflow that this SDK makes, and every MLflow error that escapes a
tracked run, passes through :func:`translate`. Each MLflow error code is mapped, in
:data:`CODE_CATEGORIES`, to one of our exception classes with the platform guide's
resolution as its ``fix``; the original exception is chained as ``__cause__``.

The platform guide's troubleshooting table, row by row:

=========================================  =====================================
Symptom                                    Our error
=========================================  =====================================
connection refused / timeout               TrackingServerUnreachableError
PERMISSION_DENIED, HTTP 401 / 403          AuthenticationError
``ModuleNotFoundError: mlflow``            MissingDependencyError
INVALID_PARAMETER_VALUE / 404 on           VersionMismatchError
``log_model`` with a version skew
artifacts missing                          ArtifactStoreError
=========================================  =====================================
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Literal, TypeVar

from michelangelo_mlflow._dependencies import missing_dependency
from michelangelo_mlflow._versions import (
    Verdict,
    client_version,
    known_server_version,
    skew_error,
    verdict,
)
from michelangelo_mlflow.exceptions import (
    ArtifactStoreError,
    AuthenticationError,
    ConfigurationError,
    MichelangeloMlflowError,
    TrackingError,
    TrackingServerUnreachableError,
)

__all__ = [
    "CODE_CATEGORIES",
    "FIX_ARTIFACTS",
    "FIX_CREDENTIALS",
    "FIX_PERMISSION",
    "FIX_TLS",
    "FIX_UNREACHABLE",
    "MODEL_NOT_LOGGED",
    "failed_logging_a_model",
    "first_line",
    "from_foreign",
    "raised_by_library",
    "translate",
    "with_note",
]

E = TypeVar("E", bound=MichelangeloMlflowError)

LIBRARY_MODULES = ("mlflow", "michelangelo_mlflow")
"""Top-level packages whose failures a tracked run translates (see :func:`raised_by_library`)."""

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
FIX_TLS = (
    "set MLFLOW_TRACKING_SERVER_CERT_PATH to the PEM CA bundle that signed the server's "
    "certificate (MLFLOW_TRACKING_INSECURE_TLS=true skips verification, not recommended)"
)
FIX_RATE = (
    "the server is throttling this client: log in batches (mlflow.log_metrics, "
    "MlflowClient.log_batch) instead of one call per value, or ask the operator to raise "
    "the limit"
)
FIX_ENDPOINT = (
    "the tracking server does not have this endpoint: check that MLFLOW_TRACKING_URI is "
    "the MLflow server's base URL and that client and server versions match "
    "(`michelangelo-mlflow doctor` shows both)"
)

Category = Literal[
    "unreachable",
    "unauthenticated",
    "permission",
    "endpoint",
    "invalid",
    "artifact",
    "rate",
    "internal",
    "tracking",
]


def _codes(category: Category, *codes: str) -> dict[str, Category]:
    return dict.fromkeys(codes, category)


CODE_CATEGORIES: Mapping[str, Category] = {
    **_codes(
        "unreachable",
        "TEMPORARILY_UNAVAILABLE",
        "SERVICE_UNDER_MAINTENANCE",
        "WORKSPACE_TEMPORARILY_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "DEPLOYMENT_TIMEOUT",
        "PROJECTS_OPERATION_TIMEOUT",
    ),
    **_codes("unauthenticated", "UNAUTHENTICATED"),
    **_codes(
        "permission", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED", "PERMISSION_NOT_PROPAGATED"
    ),
    **_codes("endpoint", "ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED", "FEATURE_DISABLED"),
    **_codes(
        "invalid", "INVALID_PARAMETER_VALUE", "MALFORMED_REQUEST", "BAD_REQUEST", "INVALID_STATE"
    ),
    **_codes(
        "artifact", "IO_ERROR", "DATA_LOSS", "MAX_BLOCK_SIZE_EXCEEDED", "MAX_READ_SIZE_EXCEEDED"
    ),
    **_codes(
        "rate",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "RESOURCE_LIMIT_EXCEEDED",
    ),
    **_codes("internal", "INTERNAL_ERROR", "UNPARSEABLE_HTTP_ERROR"),
    # Everything else is a failure of the call itself: the message and MLflow's code
    # say what to change; no deployment-level fix applies.
    **_codes(
        "tracking",
        "CANCELLED",
        "ABORTED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "INVALID_STATE_TRANSITION",
        "COULD_NOT_ACQUIRE_LOCK",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_CONFLICT",
        "PARTIAL_DELETE",
        "MAX_LIST_SIZE_EXCEEDED",
        "DRY_RUN_FAILED",
        "DIRECTORY_NOT_EMPTY",
        "DIRECTORY_PROTECTED",
        "MAX_NOTEBOOK_SIZE_EXCEEDED",
        "MAX_CHILD_NODE_SIZE_EXCEEDED",
        "SEARCH_QUERY_TOO_LONG",
        "SEARCH_QUERY_TOO_SHORT",
        "MANAGED_RESOURCE_GROUP_DOES_NOT_EXIST",
        "GIT_CONFLICT",
        "GIT_UNKNOWN_REF",
        "GIT_SENSITIVE_TOKEN_DETECTED",
        "GIT_URL_NOT_ON_ALLOW_LIST",
        "GIT_REMOTE_ERROR",
        "IPYNB_FILE_IN_REPO",
        "INSECURE_PARTNER_RESPONSE",
        "MALFORMED_PARTNER_RESPONSE",
        "METASTORE_DOES_NOT_EXIST",
        "DAC_DOES_NOT_EXIST",
        "CATALOG_DOES_NOT_EXIST",
        "SCHEMA_DOES_NOT_EXIST",
        "TABLE_DOES_NOT_EXIST",
        "SHARE_DOES_NOT_EXIST",
        "RECIPIENT_DOES_NOT_EXIST",
        "STORAGE_CREDENTIAL_DOES_NOT_EXIST",
        "EXTERNAL_LOCATION_DOES_NOT_EXIST",
        "PRINCIPAL_DOES_NOT_EXIST",
        "PROVIDER_DOES_NOT_EXIST",
        "METASTORE_ALREADY_EXISTS",
        "DAC_ALREADY_EXISTS",
        "CATALOG_ALREADY_EXISTS",
        "SCHEMA_ALREADY_EXISTS",
        "TABLE_ALREADY_EXISTS",
        "SHARE_ALREADY_EXISTS",
        "RECIPIENT_ALREADY_EXISTS",
        "STORAGE_CREDENTIAL_ALREADY_EXISTS",
        "EXTERNAL_LOCATION_ALREADY_EXISTS",
        "PROVIDER_ALREADY_EXISTS",
        "CATALOG_NOT_EMPTY",
        "SCHEMA_NOT_EMPTY",
        "METASTORE_NOT_EMPTY",
        "PROVIDER_SHARE_NOT_ACCESSIBLE",
    ),
}
"""Every MLflow ``ErrorCode`` and the kind of failure it means (a test checks coverage)."""

_ARTIFACT_STORE_MODULES = ("botocore", "boto3", "google.api_core", "google.auth", "azure.core")


def from_foreign(
    exc: BaseException, *, tracking_uri: str, run_id: str | None = None
) -> MichelangeloMlflowError | None:
    """Our exception for a foreign one, or ``None`` when it is not a tracking failure.

    Args:
        exc: The exception raised by MLflow, ``requests``, an artifact store client or
            a missing import.
        tracking_uri: The tracking URI, without credentials, for the message.
        run_id: The run being tracked, if any.

    Returns:
        The translated exception (not raised, not chained), or ``None`` for anything
        else, including our own exceptions.

    Example:
        >>> import requests
        >>> err = from_foreign(requests.ConnectionError("refused"), tracking_uri="http://m:5000")
        >>> type(err).__name__
        'TrackingServerUnreachableError'
    """
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MichelangeloMlflowError):
        return None
    if isinstance(exc, ModuleNotFoundError):
        return missing_dependency(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return TrackingServerUnreachableError(
            f"TLS verification failed for the MLflow tracking server at {tracking_uri}: "
            f"{first_line(exc)}",
            tracking_uri=tracking_uri,
            fix=FIX_TLS,
        )
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return TrackingServerUnreachableError(
            f"could not reach the MLflow tracking server at {tracking_uri}: {first_line(exc)}",
            tracking_uri=tracking_uri,
            fix=FIX_UNREACHABLE,
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return _auth_error(
                "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED",
                first_line(exc),
                tracking_uri,
            )
    if _is_artifact_store_exception(exc):
        return ArtifactStoreError(
            f"the artifact store of the MLflow tracking server at {tracking_uri} failed"
            f"{f' in run {run_id}' if run_id else ''}: {type(exc).__name__}: {first_line(exc)}",
            tracking_uri=tracking_uri,
            run_id=run_id,
            fix=FIX_ARTIFACTS,
        )
    if not isinstance(exc, MlflowException):
        return _already_active(exc)
    return _from_mlflow(exc, tracking_uri=tracking_uri, run_id=run_id)


# MLflow 2.22 and 3.17 raise a bare Exception from mlflow.start_run() when a run is active
# in the thread and nested=True is not passed: "Run with UUID <id> is already active. To
# start a new run, first end the current run with mlflow.end_run(). ..."
_ALREADY_ACTIVE = re.compile(r"^Run with UUID (\S+) is already active\.")


def _already_active(exc: BaseException) -> ConfigurationError | None:
    """The upstream checkpoint pattern, ``mlflow.start_run(run_id=...)`` inside a tracked run."""
    match = _ALREADY_ACTIVE.match(str(exc)) if type(exc) is Exception else None
    if match is None:
        return None
    return ConfigurationError(
        f"mlflow.start_run() was called while the tracked run {match[1]} is active in this "
        "thread (MLflow: 'Run with UUID ... is already active'); a tracked run is MLflow's "
        "active run, so the call cannot open another one",
        variable="nested",
        fix="drop the `with mlflow.start_run(run_id=...)` line and log directly (mlflow.log_* "
        "calls land in the tracked run), or pass nested=True: "
        "`with mlflow.start_run(run_id=run_id, nested=True):`",
    )


@contextmanager
def translate(tracking_uri: str, *, run_id: str | None = None) -> Iterator[None]:
    """Raise our typed error, chained, for any MLflow or ``requests`` error in the block.

    Exceptions that are not tracking failures (a ``ValueError`` in user code, our own
    errors) pass through unchanged.

    Args:
        tracking_uri: The tracking URI, without credentials, for messages.
        run_id: The run being tracked, if any.

    Yields:
        Nothing.

    Example:
        >>> with translate("http://mlflow.example.com:5000"):  # doctest: +SKIP
        ...     mlflow.MlflowClient().search_experiments()
    """
    try:
        yield
    except Exception as exc:
        ours = from_foreign(exc, tracking_uri=tracking_uri, run_id=run_id)
        if ours is None:
            raise
        raise ours from exc


def raised_by_library(tb: TracebackType | None) -> bool:
    """Whether an exception escaping a ``with`` block came out of a call into MLflow (or us).

    The block's own frame is skipped; if any frame the exception passed through
    below it belongs to MLflow or to this SDK, the failure is a library's (a plain
    ``mlflow.log_artifact`` that could not reach the artifact store). Otherwise the
    user's own code raised it (its own ``requests`` call, import or S3 read), and it
    must propagate untouched.

    Args:
        tb: The traceback given to ``__exit__``: its first frame is the block's.

    Example:
        >>> raised_by_library(None)
        False
    """
    frame_tb = tb.tb_next if tb is not None else None
    while frame_tb is not None:
        module = str(frame_tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in LIBRARY_MODULES:
            return True
        frame_tb = frame_tb.tb_next
    return False


def failed_logging_a_model(tb: TracebackType | None) -> bool:
    """Whether the traceback passed through MLflow's ``Model.log`` (``log_model``)."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "log" and tb.tb_frame.f_globals.get("__name__") == "mlflow.models.model":
            return True
        tb = tb.tb_next
    return False


MODEL_NOT_LOGGED = (
    "the model was not logged (MLflow creates it on the server first) and is still in "
    "the task's memory: save it with mlflow.<flavor>.save_model(model, path) inside the "
    "run, and log it when the server answers (log_model again, or mlflow.log_artifacts)"
)


def with_note(error: E, note: str, *, fix: str | None = None) -> E:
    r"""A copy of ``error`` whose message ends with ``note`` and whose fix ends with ``fix``.

    Example:
        >>> from michelangelo_mlflow.exceptions import ConfigurationError
        >>> str(with_note(ConfigurationError("bad", fix="do x"), "kept in /s", fix="then y"))
        'bad; kept in /s\n  fix: do x; then y'
    """
    from michelangelo_mlflow.exceptions import _rebuild

    message = f"{error.message}; {note}"
    joined = "; ".join(part for part in (error.fix, fix) if part) or None
    text = f"{message}\n  fix: {joined}" if joined else message
    copy = _rebuild(type(error), (text,), {**error.__dict__, "message": message, "fix": joined})
    copy.__cause__ = error.__cause__
    return copy  # type: ignore[return-value]  # _rebuild returns an instance of type(error)


def _from_mlflow(
    exc: BaseException, *, tracking_uri: str, run_id: str | None
) -> MichelangeloMlflowError:
    code = str(getattr(exc, "error_code", "INTERNAL_ERROR"))
    category = CODE_CATEGORIES.get(code, "tracking")
    text = first_line(exc)
    full = str(exc)
    where = f"{f' in run {run_id}' if run_id else ''}"
    skewed = verdict(client_version(), known_server_version(tracking_uri)) is Verdict.INCOMPATIBLE
    if category == "endpoint" and ("logged-models" in full or skewed):
        return skew_error(tracking_uri, cause=text)
    if category == "invalid" and skewed:
        return skew_error(tracking_uri, cause=f"{code}: {text}")
    if category in ("unauthenticated", "permission"):
        return _auth_error(code, text, tracking_uri)
    # urllib3's "too many 500 error responses" (MaxRetryError, as MLflow 2.22 and 3.17 word
    # it) from the server's artifact proxy: the server answers, its artifact store fails.
    if "/mlflow-artifacts/" in full and "error responses" in full:
        return _artifact_error(code, text, tracking_uri, run_id)
    # MLflow 2.22 and 3.17 raise INTERNAL_ERROR with urllib3's text for a server that
    # does not answer: "Max retries exceeded" (refused, reset), "too many 503 error
    # responses", "Read timed out". Tested with both majors' clients (test_errors,
    # compat/client2_outage).
    if category == "unreachable" or (
        category == "internal"
        and any(m in full for m in ("Max retries exceeded", "error responses", "Read timed out"))
    ):
        return TrackingServerUnreachableError(
            f"the MLflow tracking server at {tracking_uri} is not answering ({code}): {text}",
            tracking_uri=tracking_uri,
            fix=FIX_UNREACHABLE,
        )
    if category == "artifact" or _is_artifact_failure(exc):
        return _artifact_error(code, text, tracking_uri, run_id)
    fix = {"rate": FIX_RATE, "endpoint": FIX_ENDPOINT}.get(category)
    return TrackingError(
        f"MLflow call failed on {tracking_uri}{where} ({code}): {text}",
        tracking_uri=tracking_uri,
        run_id=run_id,
        error_code=code,
        fix=fix,
    )


def _artifact_error(
    code: str, text: str, tracking_uri: str, run_id: str | None
) -> ArtifactStoreError:
    return ArtifactStoreError(
        f"artifact upload or download failed on {tracking_uri}"
        f"{f' in run {run_id}' if run_id else ''} ({code}): {text}",
        tracking_uri=tracking_uri,
        run_id=run_id,
        error_code=code,
        fix=FIX_ARTIFACTS,
    )


def _auth_error(code: str, text: str, tracking_uri: str) -> AuthenticationError:
    if code == "UNAUTHENTICATED":
        return AuthenticationError(
            f"the MLflow tracking server at {tracking_uri} rejected the credentials, or "
            f"needs some and none were sent (HTTP 401, UNAUTHENTICATED): {text}",
            tracking_uri=tracking_uri,
            fix=FIX_CREDENTIALS,
        )
    return AuthenticationError(
        f"the MLflow tracking server at {tracking_uri} denied this request "
        f"(HTTP 403, {code}): {text}",
        tracking_uri=tracking_uri,
        fix=FIX_PERMISSION,
    )


def _is_artifact_store_exception(exc: BaseException) -> bool:
    return any(klass.__module__.startswith(_ARTIFACT_STORE_MODULES) for klass in type(exc).__mro__)


def _is_artifact_failure(exc: BaseException) -> bool:
    # MLflow's artifact repositories (2.22 and 3.17) raise MlflowException with free text
    # naming the store ("Failed to upload ... to s3://..."); no error code says so.
    text = str(exc).lower()
    return "artifact" in text and any(
        marker in text for marker in ("s3", "gcs", "upload", "download", "bucket", "storage")
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
