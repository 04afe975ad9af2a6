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
PYTHON = "3.11"


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
    session.run("pytest", *args)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The differential test against plain MLflow with many more generated programs (long)."""
    session.install("-e", ".[michelangelo,kubernetes,ray]", *DEV)
    args = session.posargs or ["-p", "no:cacheprovider", "tests/test_differential.py"]
    session.run("pytest", *args, env={"MM_SOAK": "1"})


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
