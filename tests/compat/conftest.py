"""A real MLflow 2.x server in its own virtualenv, for the compatibility tests.

The virtualenv is created once with ``uv`` under ``~/.cache/michelangelo-mlflow`` and
reused by later sessions; a marker file says it is complete. Without ``uv`` (or
without network access to PyPI on the first run) the ``mlflow2`` tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from michelangelo_mlflow.testing import TrackingServer

MLFLOW2 = "2.22.5"
REQUIREMENTS = (f"mlflow=={MLFLOW2}", "sqlalchemy<2.1")  # a 2.22 server needs sqlalchemy<2.1


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "michelangelo-mlflow"


def _mlflow2_python() -> Path:
    venv = _cache_root() / f"mlflow-{MLFLOW2}"
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if marker.is_file() and python.exists():
        return python
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("the MLflow 2.x compatibility tests need `uv` to build their virtualenv")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([uv, "venv", "--quiet", str(venv)], check=True, timeout=300)
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--python", str(python), *REQUIREMENTS],
            check=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(f"could not build the MLflow {MLFLOW2} virtualenv: {exc}")
    marker.touch()
    return python


@pytest.fixture(scope="session")
def mlflow2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real MLflow 2.22 server (its own virtualenv), shared by the session."""
    python = _mlflow2_python()
    with TrackingServer(tmp_path_factory.mktemp("mlflow2"), python=str(python)) as server:
        yield server
