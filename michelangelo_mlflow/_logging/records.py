"""Records as the spool keeps them, with values encoded as MLflow's entities encode them.

A record is a list: ``["m", key, value, timestamp, step]`` (a metric point, with a
sixth element for MLflow 3's model and dataset ids), ``["p", key, value]``,
``["t", key, value]``, ``["d", key]`` (a deleted tag), ``["u", status, end_time,
run_name]`` (a run update) and ``["a", path, artifact_path, repository]`` (an
artifact kept for upload). The spool stores its kind and the JSON of the rest.

MLflow's ``Metric`` turns value, timestamp and step into a protobuf ``double`` and two
``int64`` fields, so it takes numpy scalars, ``decimal``-free ``numbers.Real`` and
``numbers.Integral`` alike; :func:`encode_metric` does the same conversions, so a
value MLflow takes is a value the spool takes.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
from typing import Any

__all__ = ["encode_body", "encode_metric", "encode_records"]

_EXTRA = ("model_id", "dataset_name", "dataset_digest")

_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps(value, separators=(",", ":"))`` without building an encoder each call."""

_encode_str = json.encoder.encode_basestring_ascii  # how _ENCODE writes a str
_float_repr = float.__repr__  # and a finite float (a subclass's too)
_isfinite = math.isfinite


def encode_metric(metric: Any) -> list[Any]:
    """The record of an MLflow ``Metric`` entity (or anything with its attributes).

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace as M
        >>> encode_metric(M(key="loss", value=np.float32(0.5), timestamp=np.int64(7), step=3))
        ['m', 'loss', 0.5, 7, 3]
    """
    record: list[Any] = [
        "m",
        metric.key,
        _real(metric.value),
        _integer(metric.timestamp),
        _integer(metric.step),
    ]
    extra = {name: value for name in _EXTRA if (value := getattr(metric, name, None))}
    if extra:
        record.append(extra)
    return record


def encode_records(records: list[list[Any]]) -> list[tuple[str, str]]:
    """``(kind, body)`` pairs to store: the body is the JSON of the record's values."""
    return [(record[0], encode_body(record)) for record in records]


def encode_body(record: list[Any]) -> str:
    """The body :func:`encode_records` stores for one record, byte for byte.

    A plain metric point (a ``str`` key, a finite value, ``int`` timestamp and step, no
    model or dataset) is formatted directly, as the JSON encoder would: a third of its
    cost, on the path of every ``log_metric``.

    Example:
        >>> encode_body(["m", "loss", 0.25, 7, 3])
        '["loss",0.25,7,3]'
    """
    if len(record) == 5 and record[0] == "m":
        _, key, value, timestamp, step = record
        if (
            type(key) is str
            and type(timestamp) is int
            and type(step) is int
            and isinstance(value, float)
            and _isfinite(value)
        ):
            return f"[{_encode_str(key)},{_float_repr(value)},{timestamp},{step}]"
    return _ENCODE(record[1:])


def _real(value: Any) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    return float(value)  # what protobuf's double field would try; raises like MLflow would


def _integer(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, numbers.Integral):
        return operator.index(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return int(float(value))
    return operator.index(value)
