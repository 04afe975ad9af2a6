"""The compatibility rule, the pin, and the skew error."""

from __future__ import annotations

import sys

import mlflow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from michelangelo_mlflow._versions import (
    Verdict,
    client_version,
    known_server_version,
    pin_for,
    remember_server_version,
    skew_error,
    verdict,
)

# No deadline: these checks take microseconds, but the first example pays for imports
# and a loaded CI machine (real MLflow servers, Ray) stalls now and then; a per-example
# deadline would turn that into a flaky failure that says nothing about the code.
NO_DEADLINE = settings(deadline=None)

versions = st.tuples(st.integers(0, 9), st.integers(0, 40), st.integers(0, 20)).map(
    lambda t: ".".join(map(str, t))
)


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ("3.17.2", "3.17.2", Verdict.COMPATIBLE),
        ("3.17.2", "3.17.0", Verdict.COMPATIBLE),  # patch releases do not matter
        ("3.10.0", "3.17.2", Verdict.COMPATIBLE),  # an older client within the major works
        ("3.17.2", "3.10.1", Verdict.CLIENT_NEWER),
        ("3.17.2", "2.22.5", Verdict.INCOMPATIBLE),
        ("2.22.5", "3.17.2", Verdict.INCOMPATIBLE),
        ("3.17.2", None, Verdict.UNKNOWN),
        ("3.17.2", "not-a-version", Verdict.UNKNOWN),
    ],
)
def test_verdict_matrix(client: str, server: str | None, expected: Verdict) -> None:
    assert verdict(client, server) is expected


@NO_DEADLINE
@given(client=versions, server=versions)
def test_different_majors_are_never_compatible(client: str, server: str) -> None:
    same_major = client.split(".")[0] == server.split(".")[0]
    assert (verdict(client, server) is Verdict.INCOMPATIBLE) is not same_major


@NO_DEADLINE
@given(client=versions)
def test_an_unknown_server_version_is_unknown_never_compatible(client: str) -> None:
    assert verdict(client, None) is Verdict.UNKNOWN


@pytest.mark.parametrize(
    ("server", "pin"),
    [("2.22.5", "mlflow~=2.22.0"), ("3.17.2", "mlflow~=3.17.0"), (None, None), ("x", None)],
)
def test_pin_matches_the_servers_minor(server: str | None, pin: str | None) -> None:
    assert pin_for(server) == pin


def test_client_version_is_the_installed_mlflow() -> None:
    assert client_version() == mlflow.__version__


def test_client_version_is_the_running_mlflows_once_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The imported module's version, read each time; before the import, the distribution's."""
    from importlib.metadata import version

    monkeypatch.setattr(mlflow, "__version__", "2.99.0")
    assert client_version() == "2.99.0"
    monkeypatch.delitem(sys.modules, "mlflow")
    assert client_version() == version("mlflow") == mlflow.version.VERSION


def test_skew_error_names_both_versions_and_the_pin() -> None:
    remember_server_version("http://m:5000", "2.22.5")
    error = skew_error("http://m:5000", cause="404 on /api/2.0/mlflow/logged-models")
    assert known_server_version("http://m:5000") == "2.22.5"
    assert error.server_version == "2.22.5"
    assert error.client_version == client_version()
    assert "mlflow~=2.22.0" in (error.fix or "")
    assert "logged-models" in str(error)


def test_skew_error_without_a_known_version_pins_below_the_client_major() -> None:
    # A non-HTTP URI: nothing to ask, so the server version stays unknown.
    error = skew_error("sqlite:///x.db", cause="404")
    assert error.server_version is None
    assert error.pin == f"mlflow<{client_version().split('.')[0]}"
