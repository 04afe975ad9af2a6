"""What a framework's logger means for a tracked run it attaches to, where it would drop it.

PyTorch Lightning's ``MLFlowLogger(run_id=...)`` reads the run it is given
(``MlflowClient.get_run`` in its ``experiment`` property) and logs into it, but its
``tags=`` and ``run_name=`` only ever go into a run it creates: given ``run_id=``,
Lightning drops them silently. When that run is a tracked run, the store's ``get_run``
finds the logger among its callers and spools its tags and its run name, once per
logger, as if Lightning had created the run with them. Nothing is patched: this reads
the caller's frames, and only while a Lightning logger module is imported.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from michelangelo_mlflow._logging.courier import RunSpool

__all__ = ["apply_framework_settings"]

_LIGHTNING = frozenset({"lightning.pytorch.loggers.mlflow", "pytorch_lightning.loggers.mlflow"})
"""The modules of Lightning's ``MLFlowLogger`` (the ``lightning`` and ``pytorch_lightning``
packages ship the same code)."""

_DEPTH = 8
"""Frames above the store's ``get_run`` searched for the logger (MlflowClient's layers)."""


def apply_framework_settings(spool: RunSpool) -> None:
    """Spool the tags and run name a Lightning logger reading this run would drop.

    Called by the store's ``get_run`` for a run open in this process.
    """
    if _LIGHTNING.isdisjoint(sys.modules):
        return
    logger = _lightning_logger()
    if logger is None or id(logger) in spool.attached:
        return
    spool.attached.add(id(logger))
    from mlflow.entities import RunTag

    tags = {str(key): str(value) for key, value in dict(logger.tags or {}).items()}
    if tags:
        spool.log(tags=[RunTag(key, value) for key, value in tags.items()])
    run_name = getattr(logger, "_run_name", None)
    if run_name:
        spool.update(None, None, str(run_name))


def _lightning_logger() -> Any | None:
    """The ``MLFlowLogger`` whose ``experiment`` property is among the callers, if any."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_DEPTH):
        if frame is None:
            return None
        if frame.f_code.co_name == "experiment" and frame.f_globals.get("__name__") in _LIGHTNING:
            owner = frame.f_locals.get("self")
            return owner if type(owner).__name__ == "MLFlowLogger" else None
        frame = frame.f_back
    return None
