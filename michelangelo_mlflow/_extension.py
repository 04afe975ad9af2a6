"""The IPython extension's entry point: ``%load_ext michelangelo_mlflow``.

Apart from ``_notebook`` (the runs) and ``_ipython`` (the magics, the only module that
imports IPython), so that ``mm.load_ipython_extension`` can be looked up without
IPython installed, and no module imports one that imports it back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext michelangelo_mlflow``: the ``%%tracked`` and ``%mm_run`` magics.

    Args:
        ipython: The ``InteractiveShell`` loading the extension.

    Example:
        >>> %load_ext michelangelo_mlflow  # doctest: +SKIP
    """
    from michelangelo_mlflow._ipython import TrackingMagics

    ipython.register_magics(TrackingMagics)
