"""A pytest plugin that isolates tests of tracked tasks from each other.

Enable it in ``conftest.py``::

    pytest_plugins = ["michelangelo_mlflow.testing.pytest_plugin"]

or on the command line with ``-p michelangelo_mlflow.testing.pytest_plugin``. Every
test then starts with none of this SDK's process state (see
:func:`michelangelo_mlflow.testing.reset`), and any MLflow run a test leaves active is
ended afterwards, so one test's preflight verdict, cached experiment or open run never
leaks into the next. The fixture is also available by name, ``mm_isolation``, for
suites that prefer to request it explicitly (then omit the autouse by not enabling
the plugin and import the fixture instead).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from michelangelo_mlflow.testing._isolation import reset

__all__ = ["mm_isolation"]


@pytest.fixture(autouse=True)
def mm_isolation() -> Iterator[None]:
    """Reset this SDK's process state before the test; end runs it left active after it."""
    reset()
    yield
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run()
    reset()
