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
nox.options.sessions = ["lint", "typecheck", "docs", "tests", "frameworks", "tests_matrix"]
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


# The other Pythons the package claims (classifiers in pyproject.toml). On each, the test
# packages that cannot be installed there: tests needing them skip on that Python only
# (tests/conftest.py reads MM_TEST_MAY_LACK; anywhere else a missing package is an error).
OTHER_PYTHONS = {
    "3.10": (),
    "3.12": (),
    # michelangelo 0.12 pins onnxruntime<1.20, which has no wheels for 3.13.
    "3.13": ("michelangelo",),
}


def _pyenv_interpreters(versions: list[str]) -> None:
    """Put pyenv's interpreters of these versions on PATH, as ``pythonX.Y``.

    pyenv's shims run only the versions `pyenv global` selects, and uv's discovery stops
    at a shim that cannot run; the interpreters themselves are linked under .nox instead.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"), "versions")
    links = Path(__file__).resolve().parent / ".nox" / "interpreters"
    for version in versions:
        found = sorted(root.glob(f"{version}.*/bin/python{version}"))
        if found:
            links.mkdir(parents=True, exist_ok=True)
            link = links / f"python{version}"
            link.unlink(missing_ok=True)
            link.symlink_to(found[-1])
    if links.is_dir():
        os.environ["PATH"] = f"{links}{os.pathsep}{os.environ['PATH']}"


_pyenv_interpreters(list(OTHER_PYTHONS))


# What every other Python runs: the modules whose behaviour depends on the interpreter
# (settings and pydantic, fork and at-fork handlers, signals, SQLite, subprocesses,
# notebooks and the CLI) and one real-server path of each layer. The rest of the suite
# (outages, preflight, Ray, pipelines, registration, notebooks, examples, the
# differential test) runs on 3.11, where `tests` runs everything; the whole suite on
# every Python would take CI past its hour. `nox -s tests_matrix-3.12 -- tests` runs all
# of it on one Python.
CORE = [
    "tests/test_settings.py",
    "tests/test_bad_input.py",
    "tests/test_architecture.py",
    "tests/test_exported_members.py",
    "tests/test_pythons.py",
    "tests/test_errors.py",
    "tests/test_user_errors.py",
    "tests/test_versions.py",
    "tests/test_spool.py",
    "tests/test_run.py",
    "tests/test_never_worse.py",
    "tests/test_fork.py",
    "tests/test_signals.py",
    "tests/test_full_disk.py",
    "tests/test_gate.py",
    "tests/test_cli.py",
    "tests/test_provenance.py",
]


@nox.session(python=list(OTHER_PYTHONS))
def tests_matrix(session: nox.Session) -> None:
    """The interpreter-dependent core of the suite on the other claimed Pythons."""
    lacking = OTHER_PYTHONS[str(session.python)]
    extras = [e for e in ("michelangelo", "kubernetes", "ray") if e not in lacking]
    session.install("-e", f".[{','.join(extras)}]", *DEV)
    # The MLflow 2.x compatibility tests run MLflow 2.22 in a virtualenv of its own, the
    # same on every session: 3.11's `tests` covers them.
    args = session.posargs or [*CORE, "-p", "no:cacheprovider", "-m", "not mlflow2"]
    env = {"MM_TEST_MAY_LACK": ",".join(lacking), "MM_SIGNAL_ITERATIONS": "50"}
    session.run("pytest", f"--ignore={FRAMEWORK_TESTS}", *args, env=env)


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
