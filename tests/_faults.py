"""Real loopback faults: a closed port, a server that never answers, one that always 503s.

And a server killed when a worker process says so, through a file (a handshake).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from michelangelo_mlflow.testing import TrackingServer
from michelangelo_mlflow.testing._service import Service

_HELD: list[socket.socket] = []  # closed ports stay reserved for the whole session


def closed_port() -> int:
    """A loopback port that refuses connections for the rest of the test session.

    The port is bound and never listened on, and the socket is kept open: a connect
    is refused at once, and no other process can start listening on it meanwhile
    (a port bound and released could be taken by anything started later).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    port: int = sock.getsockname()[1]
    return port


def wait_for(path: Path, timeout: float = 120.0) -> None:
    """Wait until ``path`` exists: another process's signal (also used in Ray workers)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout:g} s")
        time.sleep(0.05)


def kill_on_signal(server: TrackingServer, handshake: Path) -> threading.Thread:
    """Kill ``server`` once a worker creates ``handshake/logged-half``; then create ``killed``.

    The worker waits for ``killed`` before logging its second half, into the outage.
    """

    def outage() -> None:
        wait_for(handshake / "logged-half")
        server.kill()
        (handshake / "killed").touch()

    killer = threading.Thread(target=outage, daemon=True)
    killer.start()
    return killer


class BlackHole:
    """A loopback socket that accepts connections (kernel backlog) and never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.close()


class AlwaysFailing(Service):
    """A real loopback HTTP server that answers every request the same way (503).

    ``AlwaysFailing(200, body=b"<html>…", content_type="text/html")`` is a proxy's
    login page in front of where the tracking server should be.
    """

    def __init__(
        self,
        status: int = 503,
        *,
        body: bytes = b"Service Unavailable",
        content_type: str | None = None,
    ) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AlwaysFailing:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
