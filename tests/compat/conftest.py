"""A real MLflow 2.x server and client in their own virtualenv, for the compatibility tests.

The virtualenv is created once with ``uv`` under ``~/.cache/michelangelo-mlflow`` and
reused by later sessions; a marker file says it is complete. It needs ``uv`` (the
README's test command installs it) and PyPI on the first run: without them the
``mlflow2`` tests fail loudly rather than skip, so CI cannot pass without them.
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
        pytest.fail("the MLflow 2.x compatibility tests need `uv`: pip install uv")
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
        pytest.fail(f"could not build the MLflow {MLFLOW2} virtualenv: {exc}")
    marker.touch()
    return python


@pytest.fixture(scope="session")
def mlflow2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real MLflow 2.22 server (its own virtualenv), shared by the session."""
    python = _mlflow2_python()
    with TrackingServer(tmp_path_factory.mktemp("mlflow2"), python=str(python)) as server:
        yield server


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mlflow2_client_python() -> Path:
    """The MLflow 2.22 virtualenv's Python with this checkout of the SDK installed in it.

    Re-installed every session (editable, about a second with uv), so it always runs
    the code under test; MLflow 2.22 itself satisfies the ``mlflow-skinny>=2.22`` bound.
    """
    python = _mlflow2_python()
    uv = shutil.which("uv")
    assert uv is not None
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), "-e", str(ROOT)],
        check=True,
        timeout=600,
    )
    return python
