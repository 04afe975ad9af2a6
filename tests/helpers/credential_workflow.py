"""A uniflow workflow whose tracked task gets its credentials from the runner's --env.

Usage: python -m tests.helpers.credential_workflow local-run --env K=V ...

The task's Settings are built when this module is imported, before the local runner
applies ``--env``: the credentials (and UF_LOCAL_RUN) must still be read when the run
starts. The tracking URI comes from WORKFLOW_TRACKING_URI, an explicit argument.
"""

from __future__ import annotations

import os

import michelangelo.uniflow.core as uniflow
import mlflow
from michelangelo.uniflow.plugins.ray import RayTask

import michelangelo_mlflow as mm

SETTINGS = mm.Settings(tracking_uri=os.environ["WORKFLOW_TRACKING_URI"])


@uniflow.task(config=RayTask(head_cpu=1, head_memory="2Gi"))
@mm.tracked(experiment="credentials-at-start", settings=SETTINGS)
def train() -> str:
    """Log one metric with the credentials the runner injected."""
    mlflow.log_metric("auc", 0.9)
    run = mlflow.active_run()
    assert run is not None
    print(f"run {run.info.run_id}", flush=True)
    return str(run.info.run_id)


@uniflow.workflow()
def flow() -> None:
    """One task."""
    train()


if __name__ == "__main__":
    uniflow.create_context().run(flow)
