"""A real ``mlflow server`` subprocess on loopback, for tests."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from michelangelo_mlflow.testing._service import Service

__all__ = ["TrackingServer"]

_PORT_ATTEMPTS = 5
"""How many ports :meth:`TrackingServer.start` tries when another process takes one."""

# How uvicorn (MLflow 3), gunicorn (MLflow 2) and the Flask development server say that
# the port is taken; EADDRINUSE is errno 98 on Linux and 48 on macOS and the BSDs.
_ADDRESS_IN_USE = re.compile(
    r"address already in use|connection in use|\[errno (?:98|48)\]", re.IGNORECASE
)


class TrackingServer(Service):
    """A real MLflow tracking server on ``127.0.0.1``, started as a subprocess.

    It uses a sqlite backend store and a local artifact root served through the
    server (``--serve-artifacts``), one worker and no job runner, so it costs about
    560 MB rather than MLflow's default 3.6 GB. With ``basic_auth=True`` it runs
    ``--app-name basic-auth`` (needs the ``mlflow[auth]`` extra) with a generated
    admin password. ``backend_store_uri=`` puts the runs in another store (a
    PostgreSQL database, as operators run it, needs a driver such as
    ``psycopg[binary]`` in the server's Python), and ``workers=`` runs that many
    server processes.

    The server's log (:attr:`log_path`) holds one access-log line per request it
    answered (MLflow 3 serves with uvicorn): ``"POST /api/2.0/mlflow/runs/log-batch
    HTTP/1.1" 200``. Benchmarks count requests there.

    The port is picked free just before the server binds it, so another process can
    take it in between. :meth:`start` copes with that: when the server exits because
    its address is in use, it starts again on a new port (up to five ports), and it
    accepts ``GET /health`` only from the server's own processes. On Linux the
    listening socket of the port must be open in a process of the server's session
    (``/proc/net/tcp``/``tcp6`` inodes against ``/proc/<pid>/fd``); elsewhere ``lsof``
    names the listener; without either, the answer to ``/health`` is trusted.

    Args:
        root: A directory for the server's database, artifacts and log.
        basic_auth: Run the basic-auth app.
        python: The interpreter whose MLflow runs the server (another virtualenv's
            Python runs another MLflow version).
        startup_timeout: Seconds to wait for ``GET /health`` (per port tried).
        backend_store_uri: Where the server keeps runs; by default a sqlite file
            ``mlflow.db`` in ``root``.
        workers: How many server processes answer requests (``--workers``).

    Raises:
        ValueError: ``workers`` is less than 1.

    Example:
        >>> with TrackingServer(tmp_path) as server:  # doctest: +SKIP
        ...     settings = mm.Settings(tracking_uri=server.url)
        >>> TrackingServer(  # doctest: +SKIP
        ...     tmp_path, backend_store_uri="postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow",
        ...     workers=4,
        ... )
    """

    admin_username = "admin"

    def __init__(
        self,
        root: Path | str,
        *,
        basic_auth: bool = False,
        python: str = sys.executable,
        startup_timeout: float = 90.0,
        backend_store_uri: str | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.root = Path(root)
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.workers = workers
        self.basic_auth = basic_auth
        self.python = str(Path(python).absolute()) if os.sep in python else python
        self.startup_timeout = startup_timeout
        self.admin_password = secrets.token_urlsafe(16) if basic_auth else ""
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's tracking URI, ``http://127.0.0.1:PORT``."""
        if not self.port:
            raise RuntimeError("the tracking server is not started; call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr."""
        return self.root / "server.log"

    def start(self) -> TrackingServer:
        """Start the server and wait until ``/health`` answers from it.

        Returns:
            This server.

        Raises:
            RuntimeError: When it is already running, exits, does not answer within
                ``startup_timeout``, or loses its port to other processes five times.
        """
        if self._process is not None:
            raise RuntimeError(f"{self!r} is already running; call stop() first")
        self.root.mkdir(parents=True, exist_ok=True)
        taken: list[int] = []
        try:
            for _ in range(_PORT_ATTEMPTS):
                self.port = _free_port()
                log_start = self._log_size()
                self._spawn()
                if self._wait_healthy(log_start):
                    return self
                taken.append(self.port)  # another process bound it first: try another one
                self.stop()
        except BaseException:
            self.stop()
            self.port = 0
            raise
        self.port = 0
        raise RuntimeError(
            f"mlflow server could not bind a port: other processes took ports {taken} "
            f"before it bound them:\n{self._log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and every process it started."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10.0)
        # Whatever is left of its process group (a worker that ignored SIGTERM).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5.0)

    @property
    def pid(self) -> int:
        """The process id of the server (the leader of its process group)."""
        if self._process is None:
            raise RuntimeError(f"{self!r} is not running")
        return self._process.pid

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash or an OOM kill would (for outage tests).

        Its store and port stay as they are: :meth:`restart` brings it back on both.
        """
        process, self._process = self._process, None
        if process is None:
            raise RuntimeError(f"{self!r} is not running")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30.0)

    def restart(self) -> TrackingServer:
        """Start the server again on the same port and store, after :meth:`kill` or :meth:`stop`.

        Returns:
            This server.

        Raises:
            RuntimeError: When it is running, or another process took its port meanwhile.
        """
        if self._process is not None:
            raise RuntimeError(f"{self!r} is running; kill() or stop() it first")
        if not self.port:
            raise RuntimeError("the tracking server was never started; call start()")
        log_start = self._log_size()
        self._spawn()
        if not self._wait_healthy(log_start):
            self.stop()
            raise RuntimeError(
                f"mlflow server could not take its port {self.port} again:\n{self._log_tail()}"
            )
        return self

    def create_user(self, username: str, password: str) -> None:
        """Create a basic-auth user (with the server's default READ permission)."""
        response = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=(self.admin_username, self.admin_password),
            timeout=10,
        )
        response.raise_for_status()

    def __repr__(self) -> str:
        auth = ", basic_auth=True" if self.basic_auth else ""
        workers = f", workers={self.workers}" if self.workers != 1 else ""
        return f"TrackingServer(port={self.port}{auth}{workers})"

    def _spawn(self) -> None:
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1",
        }
        for var in [v for v in env if v.startswith("MLFLOW_TRACKING_")]:
            del env[var]
        command = [
            self.python, "-m", "mlflow", "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.root / "artifacts"),
            "--serve-artifacts",
        ]  # fmt: skip
        if self.basic_auth:
            command += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._write_auth_config())
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )

    def _write_auth_config(self) -> Path:
        path = self.root / "basic_auth.ini"
        path.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.root / 'basic_auth.db'}\n"
            f"admin_username = {self.admin_username}\n"
            f"admin_password = {self.admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return path

    def _wait_healthy(self, log_start: int) -> bool:
        """Wait until our server answers ``/health``; ``False`` when it lost its port.

        Raises:
            RuntimeError: It exited for another reason, or did not answer in time.
        """
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                if _ADDRESS_IN_USE.search(self._log_since(log_start)):
                    return False
                raise RuntimeError(
                    f"mlflow server exited with {process.returncode}:\n{self._log_tail()}"
                )
            try:
                healthy = requests.get(f"{self.url}/health", timeout=1).status_code == 200
            except requests.RequestException:
                healthy = False
            # Another process may hold the port and answer; then ours exits, and we retry.
            if healthy and _serves_port(process.pid, self.port) is not False:
                return True
            time.sleep(0.2)
        raise RuntimeError(
            f"mlflow server did not answer /health within {self.startup_timeout} s:\n"
            f"{self._log_tail()}"
        )

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serves_port(leader: int, port: int) -> bool | None:
    """Whether a process of ``leader``'s session or process group listens on TCP ``port``.

    ``None`` when this cannot be told here (no ``/proc`` and no ``lsof``).
    """
    listening = _proc_listening_inodes(port)
    if listening is not None:
        return _proc_group_holds(leader, listening)
    return _lsof_group_listens(leader, port)


def _proc_listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on ``port`` (any address) from /proc; ``None``: no /proc."""
    inodes: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
            # timeout inode ...; the port is hex after the last ':', state 0A is LISTEN.
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes if readable else None


def _proc_group_holds(leader: int, inodes: set[str]) -> bool | None:
    if not inodes:
        return False
    unreadable = False
    for pid in _proc_group(leader):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue  # it exited meanwhile
        except OSError:
            unreadable = True
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return True
    return None if unreadable else False


def _proc_group(leader: int) -> list[int]:
    """The processes whose session or process group is ``leader`` (read from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and leader in (int(fields[2]), int(fields[3])):
            members.append(int(entry))
    return members


def _lsof_group_listens(leader: int, port: int) -> bool | None:
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    try:
        done = subprocess.run(
            [lsof, "-nP", "-a", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fp"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    pids = [int(line[1:]) for line in done.stdout.splitlines() if line[1:].isdigit()]
    if not pids:
        return None  # lsof may not see every process: cannot tell
    for pid in pids:
        with contextlib.suppress(OSError):
            if leader in (os.getpgid(pid), os.getsid(pid)):
                return True
    return False
