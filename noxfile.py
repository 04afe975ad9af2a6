"""Tooling sessions: the single source of how this project is linted, typed, built and tested."""

from __future__ import annotations

import os
from pathlib import Path

import nox

# Compile bytecode when installing: every test starts real `mlflow server` and Python
# subprocesses, and with PYTHONDONTWRITEBYTECODE set (as on CI machines here) each of
# them would otherwise compile MLflow from source again (import mlflow: 4.9 s, not 1.7 s).
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
DEV = nox.project.dependency_groups(PYPROJECT, "dev")
FRAMEWORKS = nox.project.dependency_groups(PYPROJECT, "frameworks")
PYTHON = "3.11"
FRAMEWORK_TESTS = "tests/frameworks"
# The CPU build of torch that this project's machines keep on disk: uv does not look there
# unless told (pip does, through its config). Without it, `torch==2.13.0` is PyPI's CUDA build.
LOCAL_WHEELS = Path("/opt/wheels")


def dev(*names: str) -> list[str]:
    """The dev group's pinned requirements for these package names."""
    wanted = [r for r in DEV if r.split("=")[0].split(">")[0].split("[")[0] in names]
    assert len(wanted) == len(names), f"not in the dev group: {names}"
    return wanted


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite against real MLflow servers (2.x and 3.x), gRPC and Ray."""
    session.install("-e", ".[michelangelo,kubernetes,ray]", *DEV)
    args = session.posargs or ["-p", "no:cacheprovider"]
    # The training frameworks need torch & co.: their tests run in `nox -s frameworks`.
    session.run("pytest", f"--ignore={FRAMEWORK_TESTS}", *args)


@nox.session(python=PYTHON)
def frameworks(session: nox.Session) -> None:
    """Lightning, Transformers, XGBoost, LightGBM and Ray Train/Tune log into tracked runs."""
    local = ["--find-links", str(LOCAL_WHEELS)] if LOCAL_WHEELS.is_dir() else []
    torch = [r for r in FRAMEWORKS if r.startswith("torch==")]
    # torch first, alone: a CPU build from the local wheels, before anything pulls in CUDA.
    session.install(*local, *torch)
    session.install(*local, "-e", ".[michelangelo,kubernetes,ray]", *DEV, *FRAMEWORKS)
    args = session.posargs or ["-p", "no:cacheprovider", FRAMEWORK_TESTS]
    session.run("pytest", *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*dev("ruff"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and on tests/typing (the public API as users call it)."""
    session.install("-e", ".[michelangelo,kubernetes,ray]", *DEV)
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict."""
    session.install("-e", ".", *dev("mkdocs-material", "mkdocstrings-python"))
    site = f"{session.create_tmp()}/site"
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks in benchmarks/ and print their tables."""
    session.install("-e", ".[michelangelo,kubernetes,ray]", *DEV)
    scripts = session.posargs or sorted(str(p) for p in Path("benchmarks").glob("*.py"))
    for script in scripts:
        session.run("python", script)
