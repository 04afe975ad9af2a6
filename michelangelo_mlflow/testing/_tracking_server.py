"""A real ``mlflow server`` subprocess on loopback, for tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import requests

__all__ = ["TrackingServer"]


class TrackingServer:
    """A real MLflow tracking server on ``127.0.0.1``, started as a subprocess.

    It uses a sqlite backend store and a local artifact root served through the
    server (``--serve-artifacts``), one worker and no job runner, so it costs about
    560 MB rather than MLflow's default 3.6 GB. With ``basic_auth=True`` it runs
    ``--app-name basic-auth`` (needs the ``mlflow[auth]`` extra) with a generated
    admin password.

    Args:
        root: A directory for the server's database, artifacts and log.
        basic_auth: Run the basic-auth app.
        python: The interpreter whose MLflow runs the server (another virtualenv's
            Python runs another MLflow version).
        startup_timeout: Seconds to wait for ``GET /health``.

    Example:
        >>> with TrackingServer(tmp_path) as server:  # doctest: +SKIP
        ...     settings = mm.Settings(tracking_uri=server.url)
    """

    admin_username = "admin"

    def __init__(
        self,
        root: Path | str,
        *,
        basic_auth: bool = False,
        python: str = sys.executable,
        startup_timeout: float = 90.0,
    ) -> None:
        self.root = Path(root)
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
        """Start the server and wait until ``/health`` answers.

        Returns:
            This server.

        Raises:
            RuntimeError: When it exits or does not answer within ``startup_timeout``.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
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
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
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
        self._wait_healthy()
        return self

    def stop(self) -> None:
        """Stop the server and every process it started."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def create_user(self, username: str, password: str) -> None:
        """Create a basic-auth user (with the server's default READ permission)."""
        response = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=(self.admin_username, self.admin_password),
            timeout=10,
        )
        response.raise_for_status()

    def __enter__(self) -> TrackingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        auth = ", basic_auth=True" if self.basic_auth else ""
        return f"TrackingServer(port={self.port}{auth})"

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

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self._process.returncode}:\n{self._log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not answer /health within {self.startup_timeout} s:\n"
            f"{self._log_tail()}"
        )

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
