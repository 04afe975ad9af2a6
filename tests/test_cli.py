"""The ``michelangelo-mlflow`` CLI, through click's CliRunner and the real entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from michelangelo_mlflow._cli import main
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
    policy = yaml.safe_load(result.output)
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"] == {"name": "allow-mlflow-egress", "namespace": "ml-team"}
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "train"}}
    dns, mlflow_rule = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert mlflow_rule["to"] == [{"ipBlock": {"cidr": "10.1.2.3/32"}}]
    assert mlflow_rule["ports"] == [{"protocol": "TCP", "port": 5000}]


def test_netpol_bare_ip_means_slash_32_and_no_selector_means_every_pod(
    runner: CliRunner,
) -> None:
    result = runner.invoke(
        main, ["netpol", "--namespace", "ml", "--cidr", "10.0.0.7", "--port", "443"]
    )
    policy = yaml.safe_load(result.output)
    assert policy["spec"]["podSelector"] == {}
    assert policy["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"] == "10.0.0.7/32"
    assert policy["spec"]["egress"][1]["ports"][0]["port"] == 443


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cidr", "mlflow.example.com"], "not an IP address"),
        (["--cidr", "10.0.0.1", "--selector", "novalue"], "not KEY=VALUE"),
        (["--cidr", "10.0.0.1", "--port", "70000"], "70000"),
    ],
)
def test_netpol_rejects_bad_input(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(main, ["netpol", "--namespace", "ml", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_entry_point_is_installed() -> None:
    executable = shutil.which("michelangelo-mlflow", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("michelangelo-mlflow is not on PATH (package not installed)")
    done = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.startswith("michelangelo-mlflow ")
