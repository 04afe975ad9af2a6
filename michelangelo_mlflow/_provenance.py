"""Provenance tags: where a run came from, and what happened to it.

The names are in :mod:`michelangelo_mlflow._tags`, with every other name this SDK
writes. MLflow adds its own standard tags (``mlflow.source.name``, ``mlflow.user`` …)
when the run is created.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from typing import Any

from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow._tags import (
    ERROR_MESSAGE,
    ERROR_TAGS,
    ERROR_TYPE,
    EXECUTION,
    HOST,
    MLFLOW_CLIENT,
    NAMESPACE,
    PIPELINE_RUN,
    PREVIOUS_ERROR_PREFIX,
    SDK_VERSION,
    TASK,
)

__all__ = [
    "dotted_path",
    "error_tags",
    "execution",
    "os_user",
    "provenance_tags",
    "superseded_error_tags",
]

_MAX_ERROR_MESSAGE = 1000


def provenance_tags(settings: Settings, *, task: str | None = None) -> dict[str, str]:
    """The provenance tags of a run started with ``settings``.

    Args:
        settings: The resolved configuration (Michelangelo context).
        task: Dotted path of the task function, when known.

    Returns:
        Tag names to values; tags whose value is unknown are left out.
    """
    from michelangelo_mlflow import __version__
    from michelangelo_mlflow._versions import client_version

    tags = {
        NAMESPACE: settings.namespace,
        PIPELINE_RUN: settings.pipeline_run_name,
        TASK: task,
        HOST: _hostname(),
        EXECUTION: execution(settings),
        SDK_VERSION: __version__,
        MLFLOW_CLIENT: client_version(),
    }
    return {key: value for key, value in tags.items() if value}


def execution(settings: Settings) -> str:
    """How this process runs: the value of the ``michelangelo.execution`` tag.

    ``remote`` in a uniflow task pod (``UF_REMOTE_RUN``), ``local`` in a local uniflow
    run (``UF_LOCAL_RUN``); otherwise ``interactive`` when a person types the code: an
    IPython shell (a Jupyter notebook's kernel, the ``ipython`` terminal), the Python
    REPL or ``python -i``; else ``script`` (``python train.py``, ``python -m …``,
    ``python -c``, code piped to ``python``, a test runner).

    Example:
        >>> execution(Settings(tracking_uri="http://mlflow:5000"))  # doctest: +SKIP
        'script'
    """
    if settings.remote_run:
        return "remote"
    if settings.local_run:
        return "local"
    return "interactive" if _interactive() else "script"


def _interactive() -> bool:
    """A shell reads what a person types: IPython's, or Python's own REPL (``sys.ps1``)."""
    import sys

    ipython = sys.modules.get("IPython")
    if ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None:
        return True
    return bool(sys.flags.interactive) or hasattr(sys, "ps1")


def _hostname() -> str:
    with STATE.lock:
        return STATE.facts.setdefault("host", socket.gethostname())


def os_user() -> str:
    """The operating-system user running this process (``unknown`` if there is none)."""
    with STATE.lock:
        if "user" not in STATE.facts:
            try:
                STATE.facts["user"] = getpass.getuser()
            except (ImportError, KeyError, OSError):
                STATE.facts["user"] = "unknown"
        return STATE.facts["user"]


def error_tags(exc: BaseException, *, secrets: tuple[str, ...]) -> dict[str, str]:
    """Tags that record why a run failed, with secrets redacted.

    Args:
        exc: The exception that ended the run.
        secrets: Secret values to redact from the message.

    Returns:
        The error type and its (redacted, shortened) message.
    """
    from michelangelo_mlflow._params import redact_text

    message = redact_text(str(exc), secrets)
    if len(message) > _MAX_ERROR_MESSAGE:
        message = message[: _MAX_ERROR_MESSAGE - 1] + "…"
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else dotted_path(kind)
    return {ERROR_TYPE: name, ERROR_MESSAGE: message or name}


def superseded_error_tags(tags: dict[str, str]) -> dict[str, str]:
    """The error tags of a run being resumed, renamed to ``previous_error.*``.

    A retried task that resumes its failed run clears ``michelangelo.error.*`` (the
    new attempt has not failed) and keeps the old values under these names.

    Example:
        >>> superseded_error_tags({"michelangelo.error.type": "ValueError"})
        {'michelangelo.previous_error.type': 'ValueError'}
    """
    return {
        PREVIOUS_ERROR_PREFIX + key.rsplit(".", 1)[1]: value
        for key, value in tags.items()
        if key in ERROR_TAGS
    }


def dotted_path(obj: Callable[..., Any] | type) -> str:
    """``module.qualname`` of a function or class, with ``__main__`` resolved.

    Example:
        >>> dotted_path(dotted_path)
        'michelangelo_mlflow._provenance.dotted_path'
    """
    import sys

    module = getattr(obj, "__module__", None) or "__main__"
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name != "__main__":
            module = spec.name
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"
