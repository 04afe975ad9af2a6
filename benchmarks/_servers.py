"""Servers for the benchmarks: a throw-away PostgreSQL 15 on loopback, and MLflow on it.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` (on PATH) in a temporary directory, on
a free loopback port, as the ``postgres`` OS user when this process is root (PostgreSQL
refuses to run as root; the user is created when missing) and as the current user
otherwise. It listens on 127.0.0.1 only, trusts local connections, and is removed with
its data when stopped. ``mlflow_server(kind, root, ...)`` gives a
:class:`~michelangelo_mlflow.testing.TrackingServer` on sqlite or on such a database;
the MLflow server needs ``psycopg[binary]`` for PostgreSQL (in the dev group).

    with PostgresServer() as pg:
        with TrackingServer(root, backend_store_uri=pg.uri("mlflow"), workers=4) as server:
            ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from michelangelo_mlflow.testing import TrackingServer

USER = "postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not on PATH: install PostgreSQL 15 (Debian: apt-get install "
            "postgresql-15) and put its bin directory on PATH"
        )
    return path


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:PORT."""

    def __init__(self) -> None:
        self.port = 0
        self.root: Path | None = None
        self._as_root = os.geteuid() == 0

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", USER, "--"] if self._as_root else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )

    def _ensure_user(self) -> None:
        if not self._as_root:
            return
        try:
            subprocess.run(["id", "-u", USER], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", USER],
                check=True,
            )

    def start(self) -> PostgresServer:
        """Create the cluster, start it and wait until it accepts connections."""
        self._ensure_user()
        self.root = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
        if self._as_root:
            shutil.chown(self.root, user=USER)
        data = self.root / "data"
        self.port = _free_port()
        self._run(_tool("initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            _tool("pg_ctl"), "-D", str(data), "-l", str(self.root / "postgres.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URI (psycopg 3 driver)."""
        self._run(_tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.uri(name)

    def uri(self, database: str) -> str:
        """The SQLAlchemy URI of ``database`` on this server."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the cluster (fast shutdown) and remove its directory."""
        root, self.root = self.root, None
        if root is None:
            return
        with contextlib.suppress(RuntimeError):
            self._run(_tool("pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def mlflow_server(kind: str, root: Path, *, workers: int) -> Iterator[TrackingServer]:
    """A started MLflow server on ``kind`` ("sqlite" or "postgres"); stopped on exit."""
    if kind == "sqlite":
        with TrackingServer(root, workers=workers) as server:
            yield server
        return
    if kind != "postgres":
        raise ValueError(f"unknown server kind {kind!r}: use sqlite or postgres")
    with PostgresServer() as pg:
        uri = pg.create_database("mlflow")
        with TrackingServer(root, backend_store_uri=uri, workers=workers) as server:
            yield server


def run_body(
    mode: str, url: str, experiment: str, run_name: str, body: Callable[[str], None]
) -> tuple[str | None, list[Any]]:
    """``body(run_id)`` inside this SDK's tracked run (``mode == "sdk"``) or a plain one.

    The spool, for the SDK, is in the working directory. An exception is reported, not
    hidden or raised.

    Returns:
        The error (``"Type: message"``) or ``None``, and the warnings caught meanwhile.
    """
    import warnings

    import mlflow

    import michelangelo_mlflow as mm

    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if mode == "sdk":
                settings = mm.Settings(tracking_uri=url)
                with mm.tracking_run(experiment, run_name, settings=settings) as run:
                    body(run.info.run_id)
            else:
                mlflow.set_tracking_uri(url)
                mlflow.set_experiment(experiment)
                with mlflow.start_run(run_name=run_name) as run:
                    body(run.info.run_id)
        except BaseException as exc:  # reported, not hidden
            error = f"{type(exc).__name__}: {exc}"
    return error, list(caught)
