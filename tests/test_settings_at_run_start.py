"""Values from the environment are read when a run starts, not when Settings is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from michelangelo_mlflow.testing import TrackingServer
from tests.helpers import read_as_admin

ROOT = Path(__file__).parent.parent


def test_credentials_injected_by_the_uniflow_local_runner_reach_the_run(
    auth_server: TrackingServer,
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MA_", "UF_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.helpers.credential_workflow",
            "local-run",
            "--env",
            f"MLFLOW_TRACKING_USERNAME={auth_server.admin_username}",
            "--env",
            f"MLFLOW_TRACKING_PASSWORD={auth_server.admin_password}",
        ],
        cwd=ROOT,
        env={
            **clean,
            "WORKFLOW_TRACKING_URI": auth_server.url,
            "_RAY_INIT_KWARGS": "{'num_cpus': 1, 'include_dashboard': False}",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("run "))
    stored = read_as_admin(auth_server, run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"auc": 0.9}
    assert stored.data.tags["michelangelo.execution"] == "local"  # UF_LOCAL_RUN, set at run time
    # uniflow's runner logs its own arguments (ctx: Context(_args=[... --env ...])); nothing
    # this SDK printed, and nothing stored in the run, holds the password.
    ours = [
        line for line in (result.stdout + result.stderr).splitlines() if "ctx: Context(" not in line
    ]
    assert not [line for line in ours if auth_server.admin_password in line]
    assert auth_server.admin_password not in repr(stored.data)
