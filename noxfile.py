"""Tooling sessions: the single source of how this project is linted, typed, built and tested."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
DEV = nox.project.dependency_groups(PYPROJECT, "dev")
PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite against real MLflow servers (2.x and 3.x), gRPC and Ray."""
    session.install("-e", ".[michelangelo,kubernetes,ray]", *DEV)
    args = session.posargs or ["-p", "no:cacheprovider"]
    session.run("pytest", *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and on tests/typing (the public API as users call it)."""
    session.install("-e", ".[michelangelo,kubernetes]", "mypy", "types-pyyaml", "types-requests")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict."""
    session.install("-e", ".", "mkdocs-material", "mkdocstrings-python")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(session.create_tmp() + "/site"))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks in benchmarks/ and print their tables."""
    session.install("-e", ".[michelangelo,kubernetes,ray]", *DEV)
    scripts = session.posargs or sorted(
        str(p) for p in __import__("pathlib").Path("benchmarks").glob("*.py")
    )
    for script in scripts:
        session.run("python", script)
