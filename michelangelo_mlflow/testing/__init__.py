"""Test helpers for users of michelangelo-mlflow (and for this SDK's own tests).

- :class:`TrackingServer`: a real ``mlflow server`` subprocess on loopback.
- :class:`ModelApiServer`: an in-process Michelangelo Model API (gRPC ``ModelService``
  from the official stubs) with the real server's semantics.
- :func:`reset`: forget this SDK's process state (preflight verdicts, cached
  experiments), and ``michelangelo_mlflow.testing.pytest_plugin``, a pytest plugin
  whose autouse fixture does it around every test.

Example:
    >>> from michelangelo_mlflow.testing import TrackingServer
    >>> with TrackingServer(tmp_path) as server:  # doctest: +SKIP
    ...     with mm.tracking_run(settings=mm.Settings(tracking_uri=server.url)):
    ...         mlflow.log_metric("auc", 0.9)
"""

from __future__ import annotations

from michelangelo_mlflow.testing._isolation import reset
from michelangelo_mlflow.testing._model_api import ModelApiCall, ModelApiServer
from michelangelo_mlflow.testing._tracking_server import TrackingServer

__all__ = ["ModelApiCall", "ModelApiServer", "TrackingServer", "reset"]
