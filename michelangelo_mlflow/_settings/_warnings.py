"""Warnings of the settings package, shown at the user's line.

A ``Settings(...)`` call passes through pydantic, pydantic-settings and this package's
modules before a check warns; :func:`warn` skips those frames, so the warning points at
the line that built the settings.
"""

from __future__ import annotations

import sys
import warnings

_PACKAGE = __name__.rpartition(".")[0]  # michelangelo_mlflow._settings


def warn(message: str, category: type[Warning], *, quiet_inside_package: bool = False) -> None:
    """Warn at the first frame outside this package and pydantic: the caller's line.

    Args:
        message: The warning's text: what was found, and the fix.
        category: The warning class.
        quiet_inside_package: When the caller is inside ``michelangelo_mlflow``, do not
            warn: users cannot act on the SDK's own use of a deprecated name.
    """
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and _is_plumbing(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    module = str(frame.f_globals.get("__name__", ""))
    if quiet_inside_package and module.split(".")[0] == "michelangelo_mlflow":
        return
    warnings.warn(message, category, stacklevel=level)


def _is_plumbing(module: str) -> bool:
    return (
        module == _PACKAGE
        or module.startswith(f"{_PACKAGE}.")
        or module.split(".")[0] in {"pydantic", "pydantic_core", "pydantic_settings"}
    )
