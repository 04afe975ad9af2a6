"""The public API is exactly what __all__ says, and nothing private leaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import michelangelo_mlflow as mm
from michelangelo_mlflow import exceptions, testing

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(mm)  # the lazily imported names too
        if not name.startswith("_")
        # submodules appear as attributes once imported; only `exceptions` is re-exported
        and not (isinstance(getattr(mm, name), ModuleType) and name != "exceptions")
    }
    public -= {"annotations", "TYPE_CHECKING"}  # from __future__ and typing
    assert set(mm.__all__) == public | {"__version__"}
    assert mm.__all__ == sorted(mm.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'trackingrun'"):
        mm.trackingrun  # type: ignore[attr-defined]  # noqa: B018


def test_importing_the_package_imports_neither_mlflow_nor_pydantic() -> None:
    # MLflow loads this package to find its tracking-store plugin, and the CLI's --help
    # must be fast: the public names are imported when first used.
    heavy = "{'mlflow', 'pydantic', 'requests', 'IPython'}"
    code = f"import sys, michelangelo_mlflow; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_exported_name_resolves() -> None:
    for module in (mm, exceptions, testing):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_every_exception_derives_from_the_base() -> None:
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        if name == "MichelangeloMlflowWarning":
            assert issubclass(cls, UserWarning)
        else:
            assert issubclass(cls, exceptions.MichelangeloMlflowError), name


def test_version_is_the_version_in_pyproject() -> None:
    # Read independently of the code under test (which asks importlib.metadata): a
    # stale install or a hard-coded string would differ from the checkout's pyproject.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert mm.__version__ == pyproject["project"]["version"]


def test_errors_survive_pickling_with_their_context() -> None:
    import pickle

    error = exceptions.VersionMismatchError(
        "skew",
        tracking_uri="http://mlflow:5000",
        client_version="3.17.2",
        server_version="2.22.5",
        pin="mlflow~=2.22.0",
        fix="pin it",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is exceptions.VersionMismatchError
    assert (copy.pin, copy.server_version, copy.tracking_uri, copy.fix) == (
        "mlflow~=2.22.0",
        "2.22.5",
        "http://mlflow:5000",
        "pin it",
    )
    assert str(copy) == str(error)
