"""The ``michelangelo-mlflow`` CLI, through click's CliRunner and the real entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from michelangelo_mlflow._cli import main
from michelangelo_mlflow._errors import FIX_ARTIFACTS
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import closed_port


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("command", [[], ["doctor"], ["config"], ["netpol"]])
def test_every_command_has_help(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_doctor_passes_against_a_real_server(
    runner: CliRunner, tracking_server: TrackingServer
) -> None:
    result = runner.invoke(main, ["doctor", "--tracking-uri", tracking_server.url])
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    for check in ("reachability", "authentication", "version"):
        assert check in result.output


def test_doctor_json_with_an_artifact_round_trip(
    runner: CliRunner, tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    result = runner.invoke(main, ["doctor", "--json", "--artifacts"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is True
    assert [c["name"] for c in payload["checks"]] == [
        "reachability",
        "authentication",
        "version",
        "artifacts",
    ]
    assert {c["status"] for c in payload["checks"]} == {"passed"}
    assert payload["configuration"]["tracking_uri"] == tracking_server.url


@pytest.fixture(scope="module")
def broken_artifact_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real server whose artifact destination is a file: every artifact write fails."""
    with TrackingServer(tmp_path_factory.mktemp("broken-artifacts")) as server:
        destination = server.root / "artifacts"
        shutil.rmtree(destination, ignore_errors=True)
        destination.write_text("not a directory\n")
        yield server


def doctor_artifacts(
    runner: CliRunner, server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    # One quick retry (a keep-alive connection the server closed), not MLflow's minutes.
    monkeypatch.setenv("MICHELANGELO_MLFLOW_HTTP_MAX_RETRIES", "1")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_HTTP_BACKOFF_FACTOR", "0")
    return runner.invoke(main, ["doctor", "--json", "--artifacts"])


def test_doctor_artifacts_reports_a_failing_artifact_store(
    runner: CliRunner, broken_artifact_store: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = doctor_artifacts(runner, broken_artifact_store, monkeypatch)
    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is False
    assert [(c["name"], c["status"]) for c in payload["checks"]] == [
        ("reachability", "passed"),
        ("authentication", "passed"),
        ("version", "passed"),
        ("artifacts", "failed"),
    ]
    assert "mlflow-artifacts/artifacts/" in payload["checks"][-1]["detail"]  # the upload
    failure_lines = [line for line in result.stderr.splitlines() if " failed: " in line]
    assert len(failure_lines) == 1
    assert failure_lines[0].startswith("artifacts failed:")


def test_doctor_artifacts_failure_says_to_check_the_artifact_store(
    runner: CliRunner, broken_artifact_store: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = doctor_artifacts(runner, broken_artifact_store, monkeypatch)
    assert json.loads(result.stdout)["checks"][-1]["fix"] == FIX_ARTIFACTS


def test_doctor_fails_with_one_line_per_failure_and_its_fix(runner: CliRunner) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    result = runner.invoke(main, ["doctor", "--tracking-uri", uri])
    assert result.exit_code == 1
    failure_lines = [line for line in result.stderr.splitlines() if " failed: " in line]
    assert len(failure_lines) == 1
    assert failure_lines[0].startswith("reachability failed:")
    assert "-- fix: " in failure_lines[0]
    assert "NetworkPolicy" in failure_lines[0]


def test_doctor_reports_rejected_credentials(
    runner: CliRunner, auth_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "definitely-wrong")
    result = runner.invoke(main, ["doctor", "--json", "--tracking-uri", auth_server.url])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["authenticated"] is False
    assert "definitely-wrong" not in result.output


def test_configuration_error_is_one_line_and_exit_2(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    result = runner.invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: MLFLOW_TRACKING_USERNAME is set")
    assert "MLFLOW_TRACKING_PASSWORD" in result.stderr


def test_config_shows_sources_and_redacts_secrets(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-secret-123")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_PREFLIGHT_ATTEMPTS", "5")
    result = runner.invoke(
        main, ["config", "--json", "--tracking-uri", "https://mlflow.example.com"]
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["tracking_uri"]["source"] == "argument"
    assert rows["preflight_attempts"] == {
        "name": "preflight_attempts",
        "value": "5",
        "source": "MICHELANGELO_MLFLOW_PREFLIGHT_ATTEMPTS",
        "variables": ["MICHELANGELO_MLFLOW_PREFLIGHT_ATTEMPTS"],
    }
    assert rows["tracking_token"]["value"] == "**********"
    assert rows["version_policy"]["source"] == "default"
    assert "tok-secret-123" not in result.output


def test_config_table_for_people(runner: CliRunner) -> None:
    result = runner.invoke(main, ["config", "--tracking-uri", "sqlite:///mlflow.db"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0].split() == ["SETTING", "VALUE", "SOURCE"]
    assert any(line.startswith("tracking_uri") for line in result.output.splitlines())


def test_netpol_prints_the_guides_policy_as_valid_yaml(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        ["netpol", "--namespace", "ml-team", "--cidr", "10.1.2.3/32", "--selector", "app=train"],
    )
    assert result.exit_code == 0, result.output
    policy = yaml.safe_load(result.stdout)
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"] == {"name": "allow-mlflow-egress", "namespace": "ml-team"}
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "train"}}
    dns, mlflow_rule = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert mlflow_rule["to"] == [{"ipBlock": {"cidr": "10.1.2.3/32"}}]
    assert mlflow_rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    # The artifact store is not in it unless asked for, and the output says so loudly.
    assert "does NOT allow egress to the artifact store" in result.stdout
    assert "warning:" in result.stderr


def test_netpol_bare_ip_means_slash_32_and_artifact_stores_are_added(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        [
            "netpol", "--namespace", "ml", "--cidr", "10.0.0.7", "--port", "443",
            "--selector", "app.kubernetes.io/name=train",
            "--artifact-store", "52.216.0.0/15", "--artifact-store", "10.9.0.0/16:9000",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    policy = yaml.safe_load(result.stdout)
    rules = policy["spec"]["egress"][1:]
    assert [(r["to"][0]["ipBlock"]["cidr"], r["ports"][0]["port"]) for r in rules] == [
        ("10.0.0.7/32", 443),
        ("52.216.0.0/15", 443),
        ("10.9.0.0/16", 9000),
    ]
    assert "artifact store" not in result.stderr


@pytest.mark.parametrize(
    ("args", "variable", "message"),
    [
        (["--cidr", "mlflow.example.com"], "--cidr", "not an IP address"),
        (["--cidr", "10.0.0.1", "--selector", "novalue"], "--selector", "not KEY=VALUE"),
        (["--cidr", "10.0.0.1", "--port", "70000"], "--port", "70000"),
        (["--cidr", "10.0.0.1"], "--selector", "every pod in the namespace"),
        (["--cidr", "10.0.0.1", "--selector", "app=bad value!"], "--selector", "label value"),
        (["--cidr", "10.0.0.1", "--selector", "bad key!=x"], "--selector", "label name"),
        (["--cidr", "10.0.0.1", "--selector", "/app=x"], "--selector", "DNS subdomain"),
        (["--cidr", "10.0.0.1", "--selector", "app=x", "--name", "Bad Name!"], "--name",
         "DNS-1123 subdomain"),
        (["--cidr", "10.0.0.1", "--selector", "app=x", "--artifact-store", "s3.amazonaws.com"],
         "--artifact-store", "not an IP address"),
    ],
)  # fmt: skip
def test_netpol_rejects_bad_input(
    runner: CliRunner, args: list[str], variable: str, message: str
) -> None:
    result = runner.invoke(main, ["netpol", "--namespace", "ml", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert variable in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("namespace", ["Bad_NS", "UPPER", "-leading", "a" * 64, "dots.not.ok"])
def test_netpol_refuses_a_namespace_kubernetes_would_reject(
    runner: CliRunner, namespace: str
) -> None:
    result = runner.invoke(
        main, ["netpol", "--namespace", namespace, "--cidr", "10.0.0.1", "--selector", "app=x"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --namespace")
    assert "DNS-1123 label" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_entry_point_is_installed() -> None:
    executable = shutil.which("michelangelo-mlflow", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("michelangelo-mlflow is not on PATH (package not installed)")
    done = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.startswith("michelangelo-mlflow ")


def test_doctor_without_mlflow_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # An image without MLflow: no distribution metadata, and `import mlflow` fails.
    script = (
        "import importlib.metadata as md, sys\n"
        "real = md.version\n"
        "def version(name):\n"
        "    if name in ('mlflow', 'mlflow-skinny'):\n"
        "        raise md.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "md.version = version\n"
        "sys.modules['mlflow'] = None\n"
        "from michelangelo_mlflow._cli import main\n"
        f"main(['doctor', '--tracking-uri', 'http://127.0.0.1:{closed_port()}'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: MLflow tracking")
    assert "-- fix: add `mlflow>=2.22,<4`" in line
