"""The public API is exactly what __all__ says, and nothing private leaks."""

from __future__ import annotations

from types import ModuleType

import michelangelo_mlflow as mm
from michelangelo_mlflow import exceptions, testing


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(mm).items()
        if not name.startswith("_")
        # submodules appear as attributes once imported; only `exceptions` is re-exported
        and not (isinstance(value, ModuleType) and name != "exceptions")
    }
    public -= {"annotations"}  # from __future__
    assert set(mm.__all__) == public | {"__version__"}
    assert mm.__all__ == sorted(mm.__all__)


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


def test_version_is_the_distribution_version() -> None:
    from importlib.metadata import version

    assert mm.__version__ == version("michelangelo-mlflow")


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
