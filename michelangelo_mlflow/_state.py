"""All of this SDK's process state, in one object with one lock.

Everything the SDK remembers between calls lives in :data:`STATE`: passing preflight
reports and the version warnings already issued, the server versions the preflight
saw, the spools of open runs, their storage and their courier, and
who holds MLflow's process globals. Nothing else in the package keeps mutable
module-level state, so :func:`michelangelo_mlflow.testing.reset` (and its pytest
fixture) can put a process back to its start in one call.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from pathlib import Path

    from michelangelo_mlflow._logging.courier import Courier, RunSpool
    from michelangelo_mlflow._logging.storage import Storage

__all__ = ["STATE", "Holder", "State", "hold", "let_go"]

S = TypeVar("S")


@dataclass
class State:
    """The SDK's mutable process state; hold :attr:`lock` to read or change it.

    Attributes:
        lock: Guards every field (re-entrant).
        preflight_reports: Passing preflight reports by (tracking URI, credential digest).
        preflight_flights: One check in progress per such key: concurrent first runs
            share its report, passing or failing.
        forgotten_at: When :meth:`forget` last ran (``time.time()``): a preflight
            verdict shared by another process on the host before then is not used.
        facts: Facts about the process read once (host name, OS user).
        version_warnings: (tracking URI, server version) pairs already warned about.
        server_versions: Server versions seen by the preflight, by tracking URI.
        spools: The spool of every run open in this process, by run id. Read without
            the lock on the logging path (a dict lookup is atomic).
        attached: The spools a Ray worker opened for its driver's run on its first
            write outside ``worker_run()``, by run id and worker context; ``None`` where
            it could not (the writes then go to MLflow unchanged). See
            ``_logging.opening.attached_spool``.
        courier: The thread that delivers spooled records, once started.
        storages: This process's spool storage, by spool directory, once written.
        globals_stack: The configurations applied to MLflow's process globals by open
            scopes, innermost last, each with the scopes using it (see ``_scope``).
        globals_waiting: Routed scopes waiting for the globals (see ``_scope``).
        autolog_stack: The autologging configurations applied by open runs, innermost
            last (see ``_autolog``).
        notebook_run: The notebook run open in this process (see ``_notebook``).
        last_notebook_run: The last notebook run that ended, for ``%mm_run``.
    """

    lock: threading.RLock = field(default_factory=threading.RLock)
    preflight_reports: dict[tuple[str, str], Any] = field(default_factory=dict)
    preflight_flights: dict[tuple[str, str], Any] = field(default_factory=dict)
    forgotten_at: float = 0.0
    facts: dict[str, str] = field(default_factory=dict)
    version_warnings: set[tuple[str, str]] = field(default_factory=set)
    server_versions: dict[str, str] = field(default_factory=dict)
    spools: dict[str, RunSpool] = field(default_factory=dict)
    attached: dict[tuple[str, str], RunSpool | None] = field(default_factory=dict)
    courier: Courier | None = None
    storages: dict[Path, Storage] = field(default_factory=dict)
    globals_stack: list[Any] = field(default_factory=list)
    globals_waiting: list[Any] = field(default_factory=list)
    autolog_stack: list[Any] = field(default_factory=list)
    notebook_run: Any = None
    last_notebook_run: Any = None

    def forget(self) -> None:
        """Forget every cache (reports, warnings, versions, host facts).

        Preflight verdicts that other processes of the host shared before now are
        ignored from now on: the next run checks its server.

        Open runs, their spools and the globals they hold are left alone: they belong
        to code that is still running.
        """
        with self.lock:
            self.preflight_reports.clear()
            self.forgotten_at = time.time()
            self.version_warnings.clear()
            self.server_versions.clear()
            self.facts.clear()


STATE = State()
"""The process's one :class:`State`."""


def _after_fork_in_child() -> None:
    """A forked child never waits on a lock another thread of its parent held at the fork."""
    STATE.lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class Holder(Generic[S]):
    """One configuration applied to process globals, the scopes using it, what it replaced.

    Attributes:
        key: What was applied (equal keys are the same configuration).
        saved: The globals as they were before it, put back by the last user.
        users: Open scopes using it, by thread.
    """

    key: Hashable
    saved: S
    users: Counter[int] = field(default_factory=Counter)


def hold(
    stack: list[Holder[S]],
    key: Hashable,
    save: Callable[[], S],
    apply: Callable[[], None],
    restore: Callable[[S], None],
) -> tuple[Holder[S] | None, bool]:
    """Use, or apply, a configuration of process globals for one scope of this thread.

    The same configuration is shared across threads; another one is applied only when
    no other thread holds the current one (a nested scope of this thread).

    Args:
        stack: The configurations applied, innermost last (a list in ``STATE``).
        key: The configuration wanted.
        save: Reads the globals as they are.
        apply: Sets the globals to ``key``'s configuration.
        restore: Puts saved globals back (when ``apply`` fails halfway).

    Returns:
        ``(holder, applied)``; ``(None, False)`` when another thread holds another
        configuration and the globals cannot serve both.
    """
    thread = threading.get_ident()
    with STATE.lock:
        top = stack[-1] if stack else None
        if top is not None and top.key == key:
            holder, applied = top, False
        elif top is None or set(top.users) <= {thread}:
            holder, applied = Holder(key, save()), True
            stack.append(holder)
            try:
                apply()
            except BaseException:
                stack.remove(holder)
                restore(holder.saved)
                raise
        else:
            return None, False
        holder.users[thread] += 1
        return holder, applied


def let_go(stack: list[Holder[S]], holder: Holder[S], restore: Callable[[S], None]) -> None:
    """End one scope's use of ``holder``; the last user puts the globals back.

    When a configuration applied later (by a nested scope) is still in use, it inherits
    what to put back instead.
    """
    thread = threading.get_ident()
    with STATE.lock:
        holder.users[thread] -= 1
        if holder.users[thread] <= 0:
            del holder.users[thread]
        if holder.users:
            return
        index = stack.index(holder)
        del stack[index]
        if index < len(stack):  # one applied above is still in use: it restores ours later
            stack[index].saved = holder.saved
            return
        restore(holder.saved)
