"""A minimal uniflow TaskConfig that runs a task locally, without a cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from michelangelo.uniflow.core.task_config import TaskBinding, TaskConfig


@dataclasses.dataclass
class LocalTask(TaskConfig):  # type: ignore[misc]
    """Runs the task in this process; counts its lifecycle hooks."""

    cpu: int = 1
    runs: int = 0

    def get_binding(self) -> TaskBinding:
        return TaskBinding(star_file=Path("local.star"), function="local_task", export="__local")

    @classmethod
    def get_config_binding(cls) -> TaskBinding:
        return TaskBinding(star_file=Path("local.star"), function="local", export="__local_cfg")

    def pre_run(self) -> None:
        self.runs += 1

    def post_run(self) -> None:
        pass
