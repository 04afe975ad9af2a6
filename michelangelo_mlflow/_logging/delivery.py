"""Deliver spooled records to the tracking server: batching, requests, answer kinds.

Records are packed, in order, into ``runs/log-batch`` requests within MLflow's limits
(1,000 metrics, 100 params, 100 tags, 1,000 items, 1 MB a request). A deleted tag or a
run update (its status) is sent alone, after everything logged before it.

Every request is made once, with a timeout and without MLflow's own retries (the
courier decides when to try again), and its failure is one of these kinds (the
table in docs/outage.md):

- :class:`Outage`: no server answered (connection refused or reset, DNS). Keep the
  records, try again with backoff.
- :class:`Busy`: a server answered that it cannot take the request now: HTTP 408,
  425, 429, 500, 502, 503, 504 (with ``Retry-After`` honoured), MLflow's 400
  ``BAD_REQUEST`` carrying a database error (an exhausted connection pool, a lock, a
  timeout: MLflow's ``mlflow/store/db/utils.py`` answers every SQLAlchemy error but
  ``OperationalError`` that way), or a read timeout. Keep the records, back off.
- :class:`Invalid`: the server refused the data (HTTP 400 ``INVALID_PARAMETER_VALUE``,
  a 404 for a tag that is not there, a 413 for a body too large). The courier splits
  the batch and sets the records concerned aside, alone; the rest is delivered.
- :class:`Refused`: the server refused the run or the caller (credentials,
  permissions, an unknown or deleted run, not an MLflow server). Carries this SDK's
  typed error; nothing more of the run can be delivered.

Replaying a batch whose answer was lost does not duplicate it: metric points are
stored under their key, step, timestamp and value (the primary key of MLflow's SQL
store, whose ``_log_metrics_once`` takes a batch holding points already stored
without a second row), params may be logged again with the same value, and tags and
statuses are overwritten with the same value.
"""

from __future__ import annotations

import math
import mimetypes
import posixpath
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from michelangelo_mlflow._errors import first_line, from_foreign
from michelangelo_mlflow._logging.gate import DEFAULT_SENDERS
from michelangelo_mlflow.exceptions import (
    MichelangeloMlflowError,
    TrackingError,
)

if TYPE_CHECKING:
    import requests
    from mlflow.entities import Run
    from mlflow.exceptions import MlflowException

__all__ = [
    "MAX_BATCH_BYTES",
    "Busy",
    "Invalid",
    "Outage",
    "Refused",
    "Route",
    "Unit",
    "databricks_base",
    "direct_store",
    "fetch_run",
    "health",
    "is_transport_failure",
    "send",
    "units",
    "upload",
]

MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_ITEMS = 1000
MAX_BATCH_BYTES = 900_000
"""Request body size a batch stays under (MLflow's limit is 1 MB)."""

Record = list[Any]
"""``[kind, *values]``: ``m`` metric (key, value, timestamp, step[, extra]), ``p`` param,
``t`` tag (key, value), ``d`` deleted tag (key), ``u`` run update (status, end_time,
run_name), ``a`` artifact (path, artifact_path, repository)."""

BUSY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that mean "not now" (MLflow's own retried statuses, and 425)."""

REFUSED_DATA_STATUSES = frozenset({400, 404, 413})
"""Answers that refuse the records sent, not the run: set aside, the rest goes on."""

_DATABASE_ERROR = ("sqlalche.me", "(sqlalchemy.", "QueuePool", "(psycopg", "(sqlite3.")
"""How a database error reads in MLflow's 400 BAD_REQUEST answer (SQLAlchemy's text)."""

_LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
_UPDATE_RUN = "/api/2.0/mlflow/runs/update"
_DELETE_TAG = "/api/2.0/mlflow/runs/delete-tag"
_GET_RUN = "/api/2.0/mlflow/runs/get"
_ITEM_OVERHEAD = 60  # JSON punctuation and field names around one record's values
_NUMBERS = 3 * 24
"""Characters a metric's value, timestamp and step take in JSON at most (``repr`` of a
float is at most 24, an int64 at most 20): its size is known without formatting them."""
_ALONE = {"d": "delete", "u": "update", "a": "artifact"}
"""Record kinds sent in a request of their own, in order with the others."""


class Outage(Exception):
    """No server answered: keep the records, try again later."""


class Busy(Exception):
    """The server answered "not now": keep the records, back off.

    Attributes:
        reason: What it answered.
        retry_after: Seconds it asked to wait (``Retry-After``), if it did.
        timed_out: Whether the request timed out (the server may still be working on it).
        working: Whether MLflow itself answered (its JSON error, a database error, a
            request it is still working on): the server is up and busy. A bare 503 from
            a proxy or load balancer in front of a server that is gone is not.
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        timed_out: bool = False,
        working: bool = False,
    ) -> None:
        self.reason = reason
        self.retry_after = retry_after
        self.timed_out = timed_out
        self.working = working
        super().__init__(reason)


class Invalid(Exception):
    """The server refused the records in the request (HTTP 400, 404 or 413)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Refused(Exception):
    """The server refused the request for a reason that waiting does not fix.

    Attributes:
        error: This SDK's typed error for it (AuthenticationError, TrackingError …).
    """

    def __init__(self, error: MichelangeloMlflowError) -> None:
        self.error = error
        super().__init__(error.message)


@dataclass(frozen=True)
class Route:
    """Where and as whom one run's records are sent.

    Attributes:
        tracking_uri: The tracking URI, without credentials (for messages).
        host_creds: Returns MLflow's ``MlflowHostCreds`` of the run's server: its
            host, credentials and TLS settings, fixed when the run opened.
        timeout: Seconds one request may take at first (the courier adapts it to the
            latency it measures, between this and MLflow's own 120 s).
        databricks: Whether the server is a Databricks workspace.
        senders: Requests in flight to the server from this host at most (see
            ``gate.py``; each process's share adapts below it, see ``pacing.py``).
    """

    tracking_uri: str
    host_creds: Callable[[], Any] = field(repr=False, compare=False)
    timeout: float = 10.0
    databricks: bool = False
    senders: int = DEFAULT_SENDERS


@dataclass
class Unit:
    """One request's worth of records, in spool order.

    Attributes:
        kind: ``batch`` (log-batch), ``delete`` (delete-tag), ``update`` (run update) or
            ``artifact`` (a file or directory to upload).
        records: The records it sends.
        seqs: Their sequence numbers in the spool.
    """

    kind: str
    records: list[Record] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)

    def split(self) -> tuple[Unit, Unit]:
        """Two halves, to find the records a refusal is about."""
        half = len(self.records) // 2
        return (
            Unit(self.kind, self.records[:half], self.seqs[:half]),
            Unit(self.kind, self.records[half:], self.seqs[half:]),
        )


def units(entries: Sequence[tuple[int, Record]], *, max_items: int = MAX_ITEMS) -> Iterator[Unit]:
    """Pack records into requests, in order, within MLflow's limits.

    Args:
        entries: ``(seq, record)`` pairs, oldest first.
        max_items: Fewest records a batch holds at most (the courier lowers it while
            the server is slow or busy).

    Yields:
        Units to send one after the other; a batch ends before a param or tag key it
        already holds (MLflow refuses duplicate param keys in one batch, and a tag set
        twice must keep its order with a deletion in between).
    """
    batch = Unit("batch")
    counts = {"m": 0, "p": 0, "t": 0}
    keys: set[tuple[str, str]] = set()
    size = 0
    limits = {"m": MAX_METRICS, "p": MAX_PARAMS, "t": MAX_TAGS}
    for seq, record in entries:
        kind = record[0]
        if kind in _ALONE:
            if batch.records:
                yield batch
            yield Unit(_ALONE[kind], [record], [seq])
            batch, counts, keys, size = Unit("batch"), {"m": 0, "p": 0, "t": 0}, set(), 0
            continue
        cost = _cost(record)
        full = (
            counts[kind] >= limits[kind]
            or len(batch.records) >= min(MAX_ITEMS, max_items)
            or size + cost > MAX_BATCH_BYTES
            or (kind != "m" and (kind, record[1]) in keys)
        )
        if full and batch.records:
            yield batch
            batch, counts, keys, size = Unit("batch"), {"m": 0, "p": 0, "t": 0}, set(), 0
        batch.records.append(record)
        batch.seqs.append(seq)
        counts[kind] += 1
        size += cost
        if kind != "m":
            keys.add((kind, record[1]))
    if batch.records:
        yield batch


def _cost(record: Record) -> int:
    """Bytes a batch record takes in the request, at most (cheap: the courier's hot path)."""
    if record[0] == "m":
        extra = _json_length(str(record[5])) if len(record) > 5 else 0
        return _ITEM_OVERHEAD + _json_length(record[1]) + _NUMBERS + extra
    return _ITEM_OVERHEAD + _json_length(record[1]) + _json_length(str(record[2]))


def _json_length(text: str) -> int:
    """Characters ``text`` takes in JSON at most (six for each non-ASCII one, escaped)."""
    return len(text) if text.isascii() else 6 * len(text)


def send(route: Route, run_id: str, unit: Unit, *, timeout: float | None = None) -> None:
    """Send one unit.

    Args:
        route: The run's server and credentials.
        run_id: The run.
        unit: What to send.
        timeout: Seconds the request may take (default: the route's).

    Raises:
        Outage: No server answered.
        Busy: The server answered "not now".
        Invalid: The server refused the records.
        Refused: The server refused the run or the caller.
    """
    if not unit.records:
        return
    timeout = timeout or route.timeout
    if unit.kind == "delete":
        body: dict[str, Any] = {"run_id": run_id, "key": unit.records[0][1]}
        _request(route, _DELETE_TAG, "POST", run_id, timeout, json=body)
    elif unit.kind == "update":
        _, status, end_time, run_name = (*unit.records[0], None, None, None)[:4]
        body = {"run_id": run_id, "run_uuid": run_id}
        if status is not None:
            body["status"] = status
        if end_time is not None:
            body["end_time"] = end_time
        if run_name is not None:
            body["run_name"] = run_name
        _request(route, _UPDATE_RUN, "POST", run_id, timeout, json=body)
    else:
        _request(route, _LOG_BATCH, "POST", run_id, timeout, json=_batch_body(run_id, unit.records))


def fetch_run(route: Route, run_id: str) -> Run:
    """Read a run from its server in one quick request (no MLflow retries).

    Raises:
        Outage: The server did not answer.
        Busy: It answered "not now".
        Refused: It refused the request.
    """
    from google.protobuf.json_format import ParseDict
    from mlflow.entities import Run
    from mlflow.protos.service_pb2 import GetRun

    try:
        response = _request(
            route, _GET_RUN, "GET", run_id, route.timeout, params={"run_id": run_id}
        )
    except Invalid as exc:
        raise Refused(_not_found(route, run_id, exc)) from exc
    message = GetRun.Response()
    ParseDict(response.json(), message, ignore_unknown_fields=True)
    return Run.from_proto(message.run)


def health(route: Route, timeout: float) -> None:
    """Ask the server's ``/health`` once.

    Raises:
        Outage: It did not answer 200 within ``timeout`` seconds.
    """
    import requests

    creds = route.host_creds()
    try:
        response = requests.get(
            f"{str(creds.host).rstrip('/')}/health", timeout=timeout, verify=creds.verify
        )
    except requests.RequestException as exc:
        raise Outage(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise Outage(f"HTTP {response.status_code} from /health")


def timed(call: Callable[[], None]) -> float:
    """Run ``call``; the seconds it took."""
    start = time.monotonic()
    call()
    return time.monotonic() - start


def _batch_body(run_id: str, records: list[Record]) -> dict[str, Any]:
    metrics, params, tags = [], [], {}
    for record in records:
        kind = record[0]
        if kind == "m":
            metric: dict[str, Any] = {
                "key": record[1],
                "value": _json_number(record[2]),
                "timestamp": record[3],
                "step": record[4],
            }
            if len(record) > 5 and record[5]:
                metric.update(record[5])
            metrics.append(metric)
        elif kind == "p":
            params.append({"key": record[1], "value": record[2]})
        elif kind == "t":
            tags[record[1]] = record[2]  # set twice in one batch: the last value wins
    body: dict[str, Any] = {"run_id": run_id}
    if metrics:
        body["metrics"] = metrics
    if params:
        body["params"] = params
    if tags:
        body["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    return body


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _request(
    route: Route, endpoint: str, method: str, run_id: str, timeout: float, **kwargs: Any
) -> requests.Response:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    try:
        response = http_request(  # type: ignore[no-untyped-call]
            route.host_creds(),
            endpoint,
            method,
            max_retries=0,
            timeout=timeout,
            raise_on_status=False,
            retry_timeout_seconds=1,  # Databricks SDK: approximately no retries
            **kwargs,
        )
    except MlflowException as exc:
        _raise_transport(exc, route, run_id)
    except Exception as exc:  # requests' own errors, from the Databricks SDK path
        _raise_transport(exc, route, run_id)
    if response.status_code in BUSY_STATUSES:
        raise Busy(
            f"HTTP {response.status_code} from {endpoint}",
            retry_after=_retry_after(response.headers.get("Retry-After")),
            working=_from_mlflow(response),
        )
    try:
        verify_rest_response(response, endpoint)
    except MlflowException as exc:
        reason = str(exc.message).splitlines()[0]
        if _database_error(exc):
            raise Busy(f"database busy: {reason[:200]}", working=True) from exc
        if response.status_code in REFUSED_DATA_STATUSES and exc.error_code not in _RUN_LEVEL:
            raise Invalid(reason) from exc
        raise Refused(_ours(exc, route, run_id)) from exc
    return response  # type: ignore[no-any-return]


_RUN_LEVEL = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "ENDPOINT_NOT_FOUND"})


def _raise_transport(exc: BaseException, route: Route, run_id: str) -> NoReturn:
    import requests

    if _caused_by(exc, requests.exceptions.ReadTimeout) or "Read timed out" in str(exc):
        raise Busy(
            f"no answer within the timeout: {first_line(exc)}", timed_out=True, working=True
        ) from exc
    if _is_transport_failure(exc):
        raise Outage(first_line(exc)) from exc
    raise Refused(_ours(exc, route, run_id)) from exc


def _from_mlflow(response: requests.Response) -> bool:
    """Whether an error answer is MLflow's own JSON (``{"error_code": ...}``)."""
    try:
        return "error_code" in response.json()
    except ValueError:
        return False


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, min(300.0, float(value)))
    except ValueError:
        return None  # an HTTP date: rare from MLflow's servers and proxies; use our backoff


def _not_found(route: Route, run_id: str, exc: BaseException) -> MichelangeloMlflowError:
    return TrackingError(
        f"run {run_id} cannot be read from the MLflow tracking server at {route.tracking_uri}: "
        f"{exc}",
        tracking_uri=route.tracking_uri,
        run_id=run_id,
        error_code="RESOURCE_DOES_NOT_EXIST",
        fix="check that the run exists on this server (it may have been deleted for good)",
    )


def upload(root: Path, record: Record) -> None:
    """Upload an artifact kept in the spool (``["a", path, artifact_path, repository]``).

    Each file is one try: the courier's pacer backs off between tries, and a run's end
    cuts that backoff to a second, so a server back from an outage gets the file at
    once. (MLflow's own upload retries inside the call, with a backoff that doubles,
    and would hold the courier past a run's grace while the server already answers.)
    A file large enough for MLflow's multipart upload goes through MLflow, as is.

    Raises:
        Outage: No server answered.
        Busy: It answered "not now".
        Invalid: It refused this artifact (401, 403, 404, 413 …): set aside.
    """
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    _, relative, artifact_path, repository = record[:4]
    local = root / relative
    repo: Any = HttpArtifactRepository(repository)  # type: ignore[no-untyped-call]
    try:
        for file, directory in _files(local, artifact_path):
            _put(repo, file, directory)
    except Exception as exc:
        status = http_status(exc)
        if status in BUSY_STATUSES:
            raise Busy(f"HTTP {status} from the artifact proxy") from exc
        if status is None and is_transport_failure(exc):
            raise Outage(f"{type(exc).__name__}: {first_line(exc)}") from exc
        raise Invalid(f"could not upload {local} to {repository}: {first_line(exc)}") from exc


def _files(local: Path, artifact_path: str | None) -> Iterator[tuple[Path, str | None]]:
    """The files of ``local`` and the artifact directory of each, as ``log_artifacts`` has them."""
    if not local.is_dir():
        yield local, artifact_path
        return
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        parts = path.parent.relative_to(local).parts
        yield path, posixpath.join(*filter(None, (artifact_path, *parts))) or None


def _put(repo: Any, file: Path, artifact_path: str | None) -> None:
    """One file to MLflow's artifact proxy, one try."""
    from mlflow.environment_variables import (
        MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD,
        MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE,
    )
    from mlflow.utils.request_utils import augmented_raise_for_status
    from mlflow.utils.rest_utils import http_request

    multipart = MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD.get()  # type: ignore[no-untyped-call]
    smallest = MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE.get()  # type: ignore[no-untyped-call]
    if multipart and file.stat().st_size >= smallest:
        repo.log_artifact(str(file), artifact_path)
        return
    endpoint = posixpath.join("/", *filter(None, (artifact_path, file.name)))
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    with file.open("rb") as body:
        response = http_request(  # type: ignore[no-untyped-call]
            repo._host_creds,
            endpoint,
            "PUT",
            max_retries=0,
            data=body,
            extra_headers={"Content-Type": kind},
        )
    augmented_raise_for_status(response)  # type: ignore[no-untyped-call]


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed request's answer, if a server answered."""
    import requests

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, requests.HTTPError) and cause.response is not None:
            return int(cause.response.status_code)
        cause = cause.__cause__ or cause.__context__
    # verify_rest_response words a non-JSON answer "failed with error code 503 != 200"
    # (MLflow 2.22 and 3.17). Tested with both majors' clients.
    match = re.search(r"error code (\d{3}) != 200", str(exc))
    return int(match.group(1)) if match else None


def is_busy_answer(exc: BaseException) -> bool:
    """Whether MLflow's client raised for a "not now" answer after which nothing was done.

    MLflow's 400 ``BAD_REQUEST`` carrying a database error (an exhausted connection
    pool, a lock: the transaction was rolled back), and a 429 or 503 that outlasted
    MLflow's own retries. A timeout is not: the server may have done the work.
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    if _database_error(exc):
        return True
    return exc.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED") or (
        http_status(exc) in (429, 503)
    )


def _database_error(exc: MlflowException) -> bool:
    """Whether MLflow answered 400 ``BAD_REQUEST`` with a database error's text."""
    return exc.error_code == "BAD_REQUEST" and any(m in str(exc.message) for m in _DATABASE_ERROR)


def is_transport_failure(exc: BaseException) -> bool:
    """Whether a failed call got no answer, or a "not now" one (connection, timeout, 5xx).

    A server's refusal (401, 403, 404, 413 …) is not: it is raised as plain MLflow would.
    """
    status = http_status(exc)
    if status is not None:
        return status in BUSY_STATUSES
    return _is_transport_failure(exc)


def _caused_by(
    exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _is_transport_failure(exc: BaseException) -> bool:
    import requests

    if _caused_by(exc, requests.HTTPError):
        return False  # a server answered
    if _caused_by(exc, (requests.RequestException, ConnectionError, TimeoutError)):
        return True
    # MLflow 2.22 and 3.17's http_request raise a new MlflowException inside their
    # `except Exception` (no `from`), so the chain can be cut: fall back to urllib3's words.
    return "Max retries exceeded" in str(exc) or "Connection" in str(exc)


def _ours(exc: BaseException, route: Route, run_id: str) -> MichelangeloMlflowError:
    error = from_foreign(exc, tracking_uri=route.tracking_uri, run_id=run_id)
    if error is None:
        error = TrackingError(
            f"the MLflow tracking server at {route.tracking_uri} refused records of run "
            f"{run_id}: {exc}",
            tracking_uri=route.tracking_uri,
            run_id=run_id,
        )
    return error


def direct_store(host_creds: Callable[[], Any], *, databricks: bool) -> Any:
    """MLflow's own REST store for one server and set of credentials (no spool)."""
    from mlflow.store.tracking.rest_store import RestStore

    return (databricks_base() if databricks else RestStore)(host_creds)


def databricks_base() -> type:
    """MLflow's REST store class for Databricks (MLflow 3's tracing one when there is one)."""
    try:  # MLflow 3
        from mlflow.store.tracking.databricks_rest_store import DatabricksTracingRestStore
    except ImportError:  # MLflow 2
        from mlflow.store.tracking.rest_store import RestStore

        return RestStore
    return DatabricksTracingRestStore
