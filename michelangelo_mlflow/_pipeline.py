"""Runs inside a Michelangelo pipeline: task identity, retries and the parent run.

A uniflow retry re-runs the task function from scratch, in a new pod, with the same
``MA_PIPELINE_RUN_NAME`` and no attempt number; resuming a pipeline re-executes tasks.
So every run started in a pipeline carries a deterministic *task key* (a hash of
namespace, pipeline run, task and run name), and before creating a run we look for
earlier runs with the same key:

- by default a retry is a new run, tagged with its attempt number and the previous
  attempt's run id (an honest history);
- with ``MICHELANGELO_MLFLOW_ON_RETRY=resume`` the previous attempt's run is reopened
  when it did not finish. A FINISHED run is never reopened.

With ``MICHELANGELO_MLFLOW_PIPELINE_RUN=nested`` every task run is nested under one
parent run per pipeline run. Task pods start concurrently and MLflow has no
transactions, so the parent is elected by a deterministic rule, and the losers
converge on the winner:

- the winner is the candidate with the smallest ``(start_time, run_id)``; a starter
  that finds candidates nests under the winner it sees;
- a starter that finds none creates a candidate, waits a settle window, and then
  *reconciles*: it deletes every candidate but the winner it sees and re-parents the
  task runs nested under them onto the winner;
- every task reconciles again when its run ends.

The global winner is never deleted (it is the smallest in every view that contains
it), and each reconcile happens after the reconciling task's own candidate was
stored, so the last task to end sees every candidate: in the end exactly one parent
is left and every task run is nested under it, however slow the server was.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._tags import (
    ATTEMPT,
    NAMESPACE,
    PIPELINE_KEY,
    PIPELINE_RUN,
    PREVIOUS_ATTEMPT,
    ROLE,
    TASK_KEY,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

__all__ = [
    "ATTEMPT",
    "PIPELINE_KEY",
    "PREVIOUS_ATTEMPT",
    "ROLE",
    "TASK_KEY",
    "Attempt",
    "find_attempt",
    "pipeline_parent",
    "reconcile",
    "task_key",
]


SETTLE_SECONDS = 1.0
"""How long a parent-run candidate waits for concurrent candidates before the election."""

_UNFINISHED = frozenset({"RUNNING", "SCHEDULED", "FAILED", "KILLED"})


@dataclass(frozen=True)
class Attempt:
    """What the previous attempts of a task tell about this one.

    Attributes:
        key: The task key.
        number: This attempt's number, from 1.
        previous: The previous attempt's run, if any.
        resume: Whether to reopen ``previous`` instead of creating a run.
    """

    key: str
    number: int
    previous: Run | None
    resume: bool

    def tags(self) -> dict[str, str]:
        """The identity tags of this attempt's run."""
        tags = {TASK_KEY: self.key, ATTEMPT: str(self.number)}
        if self.previous is not None and not self.resume:
            tags[PREVIOUS_ATTEMPT] = self.previous.info.run_id
        return tags


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def task_key(settings: Settings, *, task: str | None, run_name: str | None) -> str | None:
    """The deterministic key of a task's run inside a pipeline run, or ``None``.

    Args:
        settings: Supplies namespace and pipeline run name.
        task: The task's dotted path, or an explicit key.
        run_name: The run's name.

    Returns:
        A 32-character hex key; ``None`` outside a pipeline, or when neither a task
        nor a run name identifies the run.
    """
    if not settings.pipeline_run_name or not (task or run_name):
        return None
    return _digest(settings.namespace or "", settings.pipeline_run_name, task or "", run_name or "")


def find_attempt(client: MlflowClient, experiment_id: str, key: str, settings: Settings) -> Attempt:
    """Look up the earlier attempts of the task with ``key``.

    Args:
        client: The tracking server's client.
        experiment_id: The experiment the task logs to.
        key: The task key.
        settings: Supplies the ``on_retry`` policy.

    Returns:
        The attempt this run is.
    """
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TASK_KEY}` = '{key}'",
        max_results=1000,
    )
    if not runs:
        return Attempt(key, 1, None, resume=False)
    latest = max(runs, key=lambda r: (int(r.data.tags.get(ATTEMPT, "1")), r.info.start_time))
    number = int(latest.data.tags.get(ATTEMPT, "1"))
    if settings.on_retry == "resume" and latest.info.status in _UNFINISHED:
        return Attempt(key, number, latest, resume=True)
    return Attempt(key, number + 1, latest, resume=False)


def pipeline_parent(client: MlflowClient, experiment_id: str, settings: Settings) -> str:
    """Find or create the one parent run of this pipeline run; return its id.

    Safe when many task pods call it at once (see the module docstring).

    Args:
        client: The tracking server's client.
        experiment_id: The experiment the task logs to (one parent per experiment).
        settings: Supplies namespace and pipeline run name.

    Returns:
        The parent run's id.
    """
    assert settings.pipeline_run_name is not None
    key = _pipeline_key(settings)
    existing = _candidates(client, experiment_id, key)
    if existing:
        return str(_winner(existing).info.run_id)
    tags = {
        PIPELINE_KEY: key,
        ROLE: "pipeline",
        NAMESPACE: settings.namespace or "",
        PIPELINE_RUN: settings.pipeline_run_name,
        "mlflow.note.content": f"Michelangelo pipeline run {settings.pipeline_run_name}: "
        "the task runs are nested under this run.",
    }
    mine = client.create_run(experiment_id, run_name=settings.pipeline_run_name, tags=tags)
    client.set_terminated(mine.info.run_id, "FINISHED")  # a container: never left RUNNING
    time.sleep(SETTLE_SECONDS)
    return reconcile(client, experiment_id, settings)


def reconcile(client: MlflowClient, experiment_id: str, settings: Settings) -> str:
    """Converge on the winning parent: delete the others, re-parent their task runs.

    Args:
        client: The tracking server's client.
        experiment_id: The experiment of the pipeline's runs.
        settings: Supplies namespace and pipeline run name.

    Returns:
        The winning parent run's id.
    """
    from mlflow.exceptions import MlflowException

    candidates = _candidates(client, experiment_id, _pipeline_key(settings))
    if not candidates:  # the parent was deleted by hand: nothing to converge on
        raise LookupError("the pipeline's parent run was deleted")
    winner = str(_winner(candidates).info.run_id)
    for loser in candidates:
        loser_id = loser.info.run_id
        if loser_id == winner:
            continue
        children = client.search_runs(
            [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{loser_id}'"
        )
        for child in children:
            client.set_tag(child.info.run_id, "mlflow.parentRunId", winner)
        if loser.info.status == "FAILED":
            mark_parent_failed(client, winner)
        try:
            client.delete_run(loser_id)
        except MlflowException:  # another task deleted it first
            continue
    return winner


def mark_parent_failed(client: MlflowClient, parent_run_id: str) -> None:
    """Record on the pipeline's parent run that one of its task runs failed."""
    client.set_terminated(parent_run_id, "FAILED")


def _pipeline_key(settings: Settings) -> str:
    return _digest("pipeline", settings.namespace or "", settings.pipeline_run_name or "")


def _candidates(client: MlflowClient, experiment_id: str, key: str) -> list[Run]:
    return list(
        client.search_runs(
            [experiment_id], filter_string=f"tags.`{PIPELINE_KEY}` = '{key}'", max_results=1000
        )
    )


def _winner(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id))
