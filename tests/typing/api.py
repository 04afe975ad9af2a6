"""The public API as users call it; type-checked by mypy (nox -s typecheck), never executed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow

import michelangelo_mlflow as mm
from michelangelo_mlflow import testing
from michelangelo_mlflow.exceptions import ConfigurationError, MichelangeloMlflowError
from michelangelo_mlflow.testing import ModelApiServer, TrackingServer


@dataclass
class Config:
    lr: float = 0.1


@mm.tracked
def bare(rows: int) -> int:
    return rows


@mm.tracked(experiment="fraud-detection", run_name="xgb", log_params=("config",), key="train")
def train(data: list[float], config: Config, *, seed: int = 7) -> float:
    mlflow.log_metric("auc", 0.9)
    return sum(data) + seed


@mm.tracked(experiment="fraud-detection")
async def evaluate(threshold: float) -> bool:
    return threshold > 0.5


def use_the_api(server: TrackingServer, model_api: ModelApiServer) -> None:
    n: int = bare(3)
    auc: float = train([1.0], Config(), seed=3)
    settings = mm.Settings(tracking_uri=server.url, namespace="ml-team", preflight_enabled=False)
    uri: str = settings.safe_tracking_uri
    for row in settings.describe():
        source: str = row.source
    with mm.tracking_run("fraud-detection", "eda", params={"rows": n}, settings=settings) as run:
        run_id: str = run.info.run_id
        step: int = mm.next_step("loss")
    report: mm.PreflightReport = mm.preflight(settings, force=True)
    reachable: bool | None = report.reachable
    try:
        registration = mm.register_model(
            f"runs:/{run_id}/model", "fraud-detector", michelangelo=False, settings=settings
        )
        version: str = registration.mlflow.version
        ref: mm.MichelangeloModelRef | None = registration.michelangelo
    except ConfigurationError as exc:
        variable: str | None = exc.variable
    except MichelangeloMlflowError as exc:
        fix: str | None = exc.fix
    del auc, uri, source, step, reachable, model_api


@mm.tracked(experiment="fraud-detection", autolog="sklearn", system_metrics=True)
def fit(rows: int) -> int:
    return rows


def use_the_notebook_api(settings: mm.Settings, shell: Any) -> None:
    fitted: int = fit(3)
    run: mm.NotebookRun = mm.start_run(
        experiment="fraud-detection",
        run_name="eda",
        autolog={"log_models": False, "sklearn": {"max_tuning_runs": 3}},
        system_metrics=True,
        settings=settings,
    )
    run_id: str = run.run_id
    url: str | None = run.url
    status: str = run.status
    run.end()
    run.end("KILLED", record_error=True)
    current: mm.NotebookRun | None = mm.NotebookRun.current()
    with mm.start_run(autolog=["sklearn", "lightgbm"]) as spanning:
        same: mm.NotebookRun = spanning
    with mm.tracking_run("fraud-detection", autolog=True, system_metrics=False) as active:
        active_id: str = active.info.run_id
    mm.load_ipython_extension(shell)


def use_the_new_settings_and_testing() -> None:
    settings = mm.Settings(tracking_uri="http://127.0.0.1:5000", spool="on", spool_grace=10.0)
    fresh: mm.Settings = settings.refreshed()
    budget: dict[str, str] = fresh.http_budget()
    testing.reset()
    options: mm.RunOptions = {"tags": {"team": "risk"}, "nested": False}
    with mm.tracking_run("fraud-detection", **options):
        pass
