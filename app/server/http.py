"""Serving the API with uvicorn on a socket bound here: a port in use is one line before anything
starts, a port of 0 picks a free one, and connections queue from the moment it is bound."""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any


class ServeError(Exception):
    """The server cannot start; one line."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it could resolve anywhere
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Another machine can reach a non-loopback address: it needs a key."""
    if not is_loopback(host) and not api_key:
        raise ServeError(f"refusing to serve on {host} without an API key: anyone who can reach it could use "
                         "the model; give it an API key (--api-key KEY, or serve_api_key in the config) or bind 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


class Server:
    """uvicorn on a bound socket; ``run()`` blocks (Ctrl-C ends it), or ``start()`` on a thread."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def run(self) -> None:
        try:
            self._server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.run, name="llmos-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
