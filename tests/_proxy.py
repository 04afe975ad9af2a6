"""A real loopback HTTP proxy in front of a real tracking server, for faults mid-run.

``FaultProxy(upstream)`` forwards every request to the server until told otherwise:

- ``proxy.mode = "503"``: answer every request 503 (a server in trouble);
- ``proxy.mode = "hang"``: accept and never answer (a stuck load balancer);
- ``proxy.drop_answers(path, n)``: forward the next ``n`` requests to ``path`` and drop
  the server's answer (the connection closes): the server applied them, the client
  cannot know;
- ``proxy.refuse(prefix, status)``: answer requests whose path starts with ``prefix``
  with ``status`` (a body-size limit's 413, say) without forwarding them;
- ``proxy.mode = "forward"``: back to normal.

While the server itself is down, the proxy closes each connection without an answer.

Every request is recorded with the status the client got (``None`` when it got none).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from michelangelo_mlflow.testing._service import Service

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy(Service):
    """A loopback proxy to ``upstream`` whose faults tests switch on and off."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "forward"
        self.log: list[tuple[str, str, int | None]] = []
        self._drops: dict[str, int] = {}
        self._refusals: dict[str, tuple[int, bytes | None, int | None]] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                outer._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's URL: use it as the tracking URI."""
        return f"http://127.0.0.1:{self.port}"

    def drop_answers(self, path: str, count: int = 1) -> None:
        """Forward the next ``count`` requests to ``path``, then drop the server's answers."""
        with self._lock:
            self._drops[path] = count

    def refuse(
        self, prefix: str, status: int, *, body: bytes | None = None, times: int | None = None
    ) -> None:
        """Answer requests whose path starts with ``prefix`` with ``status``, unforwarded.

        Args:
            prefix: The paths refused.
            status: The answer's status.
            body: The answer's body (default: a proxy's HTML page).
            times: Refuse only the next ``times`` such requests, then forward them.
        """
        with self._lock:
            self._refusals[prefix] = (status, body, times)

    def requests_to(self, path: str) -> list[int | None]:
        """The statuses clients got from requests to ``path``, in order."""
        with self._lock:
            return [status for _, p, status in self.log if p.split("?")[0] == path]

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path
        while self.mode == "hang":
            time.sleep(0.05)
        if self.mode == "503":
            self._answer(handler, 503, b"Service Unavailable", {})
            self._record(handler.command, path, 503)
            return
        with self._lock:
            prefix = next((p for p in self._refusals if path.startswith(p)), None)
            refusal = self._refusals.get(prefix) if prefix is not None else None
            if prefix is not None and refusal is not None and refusal[2] is not None:
                left = refusal[2] - 1
                if left > 0:
                    self._refusals[prefix] = (refusal[0], refusal[1], left)
                else:
                    del self._refusals[prefix]
        if refusal is not None:
            status, page, _ = refusal
            if page is None:
                self._answer(handler, status, b"<html>Request Entity Too Large</html>", {})
            else:
                self._answer(handler, status, page, {"Content-Type": "application/json"})
            self._record(handler.command, path, status)
            return
        try:
            response = self._session.request(
                handler.command,
                self.upstream + path,
                data=body,
                headers={k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP},
                allow_redirects=False,
                timeout=60,
            )
        except requests.RequestException:  # the server is down: so is the proxy, to the client
            self._record(handler.command, path, None)
            handler.close_connection = True
            return
        with self._lock:
            remaining = self._drops.get(path.split("?")[0], 0)
            if remaining:
                self._drops[path.split("?")[0]] = remaining - 1
        if remaining:
            self._record(handler.command, path, None)
            handler.close_connection = True  # the server applied it; the answer is lost
            return
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
        self._answer(handler, response.status_code, response.content, headers)
        self._record(handler.command, path, response.status_code)

    def _answer(
        self, handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _record(self, method: str, path: str, status: int | None) -> None:
        with self._lock:
            self.log.append((method, path, status))

    def start(self) -> FaultProxy:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (a hanging request is let go)."""
        self.mode = "forward"
        self._server.shutdown()
        self._server.server_close()
