"""A 3.x client against a real MLflow 2.x server, and the same checks against 3.x."""

from __future__ import annotations

import warnings

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from michelangelo_mlflow._errors import translate
from michelangelo_mlflow._preflight import ensure_preflight, preflight
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._versions import Verdict, client_version, known_server_version
from michelangelo_mlflow.exceptions import MichelangeloMlflowWarning, VersionMismatchError
from michelangelo_mlflow.testing import TrackingServer
from tests.compat.conftest import MLFLOW2

pytestmark = pytest.mark.mlflow2
PIN = "mlflow~=2.22.0"


def test_preflight_reads_the_2x_servers_version(mlflow2_server: TrackingServer) -> None:
    report = preflight(Settings(tracking_uri=mlflow2_server.url))
    assert report.server_version == MLFLOW2
    assert report.verdict is Verdict.INCOMPATIBLE
    assert report.checks[-1].status == "failed"
    with pytest.raises(VersionMismatchError, match=PIN):
        report.raise_for_failure()


def test_strict_policy_refuses_the_2x_server(mlflow2_server: TrackingServer) -> None:
    settings = Settings(tracking_uri=mlflow2_server.url, version_policy="strict")
    with pytest.raises(VersionMismatchError) as info:
        ensure_preflight(settings)
    assert (info.value.client_version, info.value.server_version, info.value.pin) == (
        client_version(),
        MLFLOW2,
        PIN,
    )
    message = str(info.value)
    assert PIN in message
    assert MLFLOW2 in message
    assert client_version() in message


def test_warn_policy_warns_once_about_the_2x_server(mlflow2_server: TrackingServer) -> None:
    settings = Settings(tracking_uri=mlflow2_server.url)
    with pytest.warns(MichelangeloMlflowWarning, match=PIN) as record:
        ensure_preflight(settings)
    assert len(record) == 1
    assert MLFLOW2 in str(record[0].message)
    assert client_version() in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_preflight(settings)  # the second time: no warning


def test_off_policy_neither_warns_nor_raises_but_remembers(
    mlflow2_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICHELANGELO_MLFLOW_VERSION_POLICY", "off")
    assert known_server_version(mlflow2_server.url) is None  # learned by this call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_preflight(Settings(tracking_uri=mlflow2_server.url))
    # Remembered for later errors: a 404 on logged-models then names both versions.
    assert known_server_version(mlflow2_server.url) == MLFLOW2


@pytest.mark.parametrize(
    "switch",
    [
        {"MICHELANGELO_MLFLOW_VERSION_POLICY": "off"},
        {"MICHELANGELO_MLFLOW_PREFLIGHT": "false"},
    ],
)
def test_log_model_404_is_a_version_mismatch_even_unchecked(
    mlflow2_server: TrackingServer, switch: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    for name, value in switch.items():
        monkeypatch.setenv(name, value)
    settings = Settings(tracking_uri=mlflow2_server.url)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MichelangeloMlflowWarning)
        ensure_preflight(settings)
    with mlflow_scope(settings), mlflow.start_run() as run:
        # Runs, params and metrics work against 2.x ...
        with translate(settings.safe_tracking_uri, run_id=run.info.run_id):
            mlflow.log_param("alpha", 0.5)
            mlflow.log_metric("auc", 0.9)
        # ... log_model does not, and says why, with both versions and the pin.
        with (
            pytest.raises(VersionMismatchError) as info,
            translate(settings.safe_tracking_uri, run_id=run.info.run_id),
        ):
            mlflow.sklearn.log_model(sklearn.LinearRegression(), name="model")
    error = info.value
    assert (error.client_version, error.server_version, error.pin) == (
        client_version(),
        MLFLOW2,
        PIN,
    )
    assert "logged-models" in str(error)
    data = MlflowClient(mlflow2_server.url).get_run(run.info.run_id).data
    assert data.params == {"alpha": "0.5"}


def test_same_checks_pass_against_3x(tracking_server: TrackingServer) -> None:
    settings = Settings(tracking_uri=tracking_server.url, version_policy="strict")
    ensure_preflight(settings)
    assert preflight(settings).verdict is Verdict.COMPATIBLE
