"""Run by tests/compat/test_client_mlflow2.py with the MLflow 2.22 client's Python.

The spool's view of failures rests on how MLflow words and chains its errors; this
checks it with a real 2.22 client: a closed port is an outage, a tracked run survives a
server answering 503 and delivers every point after, and escaped errors are translated.

Usage: python client2_outage.py TRACKING_URI CLOSED_PORT_URI
Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import sys
import time

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

import michelangelo_mlflow as mm
from michelangelo_mlflow._errors import from_foreign
from michelangelo_mlflow._logging.delivery import is_transport_failure
from tests._proxy import FaultProxy


def transport_failure(closed: str) -> bool:
    try:
        http_request(MlflowHostCreds(closed), "/api/2.0/mlflow/runs/get", "GET", max_retries=0)
    except Exception as exc:  # MLflow 2.22 words and chains it in its own way
        return is_transport_failure(exc)
    raise AssertionError("a closed port answered")


def translated(closed: str) -> str:
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        MlflowClient(closed).get_run("0" * 32)
    except Exception as exc:
        ours = from_foreign(exc, tracking_uri=closed)
        return type(ours).__name__
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    raise AssertionError("a closed port answered")


def survives_503(uri: str) -> str:
    with FaultProxy(uri) as proxy:
        settings = mm.Settings(tracking_uri=proxy.url)
        with mm.tracking_run(f"compat-outage-{time.time_ns()}", settings=settings) as run:
            proxy.mode = "503"
            for step in range(20):
                mlflow.log_metric("loss", 0.5, step=step)
            deadline = time.monotonic() + 30
            while 503 not in proxy.requests_to("/api/2.0/mlflow/runs/log-batch"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            proxy.mode = "forward"
    return str(run.info.run_id)


if __name__ == "__main__":
    uri, closed = sys.argv[1], sys.argv[2]
    result = {
        "client": mlflow.__version__,
        "transport_failure": transport_failure(closed),
        "translated": translated(closed),
        "run_id": survives_503(uri),
    }
    print(json.dumps(result))
