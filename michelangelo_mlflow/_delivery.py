"""Deliver spooled records to the tracking server: batching, requests, failure kinds.

Records are packed, in order, into ``runs/log-batch`` requests within MLflow's limits
(1,000 metrics, 100 params, 100 tags, 1,000 items, 1 MB a request). A deleted tag or a
run update (its status) is sent alone, after everything logged before it.

Every request is made once, with a timeout and without MLflow's own retries (the
courier decides when to try again), and its failure is one of three kinds:

- :class:`Outage`: the server did not take the request and may later (connection
  refused or reset, timeout, HTTP 408, 425, 429, 500, 502, 503, 504: the statuses
  MLflow itself retries, and 425). The records stay in the spool.
- :class:`Invalid`: the server refused the data (HTTP 400): a param changed, a value
  too long. The batch is split to find the records concerned.
- :class:`Refused`: anything else (credentials, permissions, an unknown or deleted
  run, not an MLflow server). Carries this SDK's typed error.

Replaying a batch whose answer was lost does not duplicate it: metric points are
stored under their key, step, timestamp and value (a SQL store's primary key, so the
same point logged twice is one row), params may be logged again with the same
value, and tags and statuses are overwritten with the same value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from michelangelo_mlflow._errors import from_foreign
from michelangelo_mlflow._spool import Record
from michelangelo_mlflow.exceptions import (
    ArtifactStoreError,
    MichelangeloMlflowError,
    TrackingError,
)

if TYPE_CHECKING:
    import requests
    from mlflow.entities import Run

__all__ = [
    "MAX_BATCH_BYTES",
    "Invalid",
    "Outage",
    "Refused",
    "Route",
    "Unit",
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

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
_UPDATE_RUN = "/api/2.0/mlflow/runs/update"
_DELETE_TAG = "/api/2.0/mlflow/runs/delete-tag"
_GET_RUN = "/api/2.0/mlflow/runs/get"
_ITEM_OVERHEAD = 60  # JSON punctuation and field names around one record's values
_ALONE = {"d": "delete", "u": "update", "a": "artifact"}
"""Record kinds sent in a request of their own, in order with the others."""


class Outage(Exception):
    """The server did not take the request, and may later: keep the records, try again."""


class Invalid(Exception):
    """The server refused the data in the request as invalid (HTTP 400)."""

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
        timeout: Seconds one request may take.
        databricks: Whether the server is a Databricks workspace.
    """

    tracking_uri: str
    host_creds: Callable[[], Any] = field(repr=False, compare=False)
    timeout: float = 10.0
    databricks: bool = False


@dataclass
class Unit:
    """One request's worth of records, in spool order.

    Attributes:
        kind: ``batch`` (log-batch), ``delete`` (delete-tag), ``update`` (run update) or
            ``artifact`` (a file or directory to upload).
        records: The records it sends.
        end: Offset in the segment just after its last record.
    """

    kind: str
    records: list[Record]
    end: int


def units(entries: Sequence[tuple[int, Record]]) -> Iterator[Unit]:
    """Pack records into requests, in order, within MLflow's limits.

    Args:
        entries: ``(end offset, record)`` pairs as read from a segment.

    Yields:
        Units to send one after the other; a unit ends before a param key it already
        holds (MLflow refuses duplicate param keys in one batch).
    """
    batch = Unit("batch", [], 0)
    counts = {"m": 0, "p": 0, "t": 0}
    keys: set[tuple[str, str]] = set()
    size = sent = 0
    for end, record in entries:
        kind = record[0]
        if kind in _ALONE:
            if batch.records:
                yield batch
            yield Unit(_ALONE[kind], [record], end)
            batch, counts, keys, size = Unit("batch", [], end), {"m": 0, "p": 0, "t": 0}, set(), 0
            sent = end
            continue
        if kind not in counts:  # a torn or foreign line: acknowledged with the rest
            batch.end = end
            continue
        cost = _ITEM_OVERHEAD + sum(len(str(v)) for v in record[1:])
        limits = {"m": MAX_METRICS, "p": MAX_PARAMS, "t": MAX_TAGS}
        full = (
            counts[kind] >= limits[kind]
            or sum(counts.values()) >= MAX_ITEMS
            or size + cost > MAX_BATCH_BYTES
            or (kind != "m" and (kind, record[1]) in keys)
        )
        if full and batch.records:
            yield batch
            sent = batch.end
            batch, counts, keys, size = Unit("batch", [], end), {"m": 0, "p": 0, "t": 0}, set(), 0
        batch.records.append(record)
        batch.end = end
        counts[kind] += 1
        size += cost
        if kind != "m":
            keys.add((kind, record[1]))
    if batch.records or batch.end > sent:  # a torn line at the end is acknowledged too
        yield batch


def send(route: Route, run_id: str, unit: Unit) -> None:
    """Send one unit.

    Raises:
        Outage: Try again later.
        Invalid: The server refused the data.
        Refused: The server refused the request for another reason.
    """
    if not unit.records:
        return
    if unit.kind == "delete":
        _post(route, _DELETE_TAG, {"run_id": run_id, "key": unit.records[0][1]}, run_id)
    elif unit.kind == "update":
        _, status, end_time, run_name = (*unit.records[0], None, None, None)[:4]
        body: dict[str, Any] = {"run_id": run_id, "run_uuid": run_id}
        if status is not None:
            body["status"] = status
        if end_time is not None:
            body["end_time"] = end_time
        if run_name is not None:
            body["run_name"] = run_name
        _post(route, _UPDATE_RUN, body, run_id)
    else:
        _post(route, _LOG_BATCH, _batch_body(run_id, unit.records), run_id)


def fetch_run(route: Route, run_id: str) -> Run:
    """Read a run from its server in one quick request (no MLflow retries).

    Raises:
        Outage: The server did not answer.
        Refused: It refused the request.
    """
    from google.protobuf.json_format import ParseDict
    from mlflow.entities import Run
    from mlflow.protos.service_pb2 import GetRun

    response = _request(route, _GET_RUN, "GET", run_id, params={"run_id": run_id})
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


def _post(route: Route, endpoint: str, body: dict[str, Any], run_id: str) -> None:
    _request(route, endpoint, "POST", run_id, json=body)


def _request(
    route: Route, endpoint: str, method: str, run_id: str, **kwargs: Any
) -> requests.Response:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    try:
        response = http_request(  # type: ignore[no-untyped-call]
            route.host_creds(),
            endpoint,
            method,
            max_retries=0,
            timeout=route.timeout,
            raise_on_status=False,
            retry_timeout_seconds=1,  # Databricks SDK: approximately no retries
            **kwargs,
        )
    except MlflowException as exc:
        if _is_transport_failure(exc):
            raise Outage(str(exc).splitlines()[0]) from exc
        raise Refused(_ours(exc, route, run_id)) from exc
    except Exception as exc:  # requests' own errors, from the Databricks SDK path
        raise Outage(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code in RETRYABLE_STATUSES:
        raise Outage(f"HTTP {response.status_code} from {endpoint}")
    try:
        verify_rest_response(response, endpoint)
    except MlflowException as exc:
        if response.status_code == 400:
            raise Invalid(str(exc.message).splitlines()[0]) from exc
        raise Refused(_ours(exc, route, run_id)) from exc
    return response  # type: ignore[no-any-return]


def upload(root: Path, record: Record) -> None:
    """Upload an artifact kept in the spool (``["a", path, artifact_path, repository]``).

    Raises:
        Outage: The server did not take it; try again later.
        Refused: It refused it for another reason.
    """
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    _, relative, artifact_path, repository = record[:4]
    local = root / relative
    repo: Any = HttpArtifactRepository(repository)  # type: ignore[no-untyped-call]
    try:
        if local.is_dir():
            repo.log_artifacts(str(local), artifact_path)
        else:
            repo.log_artifact(str(local), artifact_path)
    except Exception as exc:
        if is_transport_failure(exc):
            raise Outage(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        raise Refused(
            ArtifactStoreError(
                f"could not upload {local} (kept in the spool) to {repository}: {exc}",
                tracking_uri=repository.split("/api/", 1)[0],
                fix="check the artifact store of the tracking server, then run "
                "michelangelo-mlflow sync",
            )
        ) from exc


def is_transport_failure(exc: BaseException) -> bool:
    """Whether a failed call never reached an answering server (connection, timeout, 5xx)."""
    # verify_rest_response words a non-JSON 5xx "failed with error code 503 != 200"
    # (MLflow 2.22 and 3.17); the artifact proxy's HttpArtifactRepository raises
    # requests' HTTPError "503 Server Error". Tested with both majors' clients.
    text = str(exc)
    if any(f"error code {s}" in text or f" {s} " in text for s in (502, 503, 504)):
        return True
    return _is_transport_failure(exc)


def _is_transport_failure(exc: BaseException) -> bool:
    import requests

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, requests.RequestException | ConnectionError | TimeoutError):
            return True
        cause = cause.__cause__ or cause.__context__
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
