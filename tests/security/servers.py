"""Loopback HTTP servers for the security tests: pages that carry instructions, a log of every
request they received (what reached the "attacker")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PageServer:
    """Serves ``pages`` ({path: html, with ``{base}`` for this server's address}) on ``host``;
    every request's path and query is kept in ``requests``."""

    def __init__(self, pages: dict[str, str] | Callable[["PageServer"], dict[str, str]], host: str = "127.0.0.1") -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(self.path)
                body = owner.pages.get(self.path.partition("?")[0], "<html><body><p>ok</p></body></html>")
                data = body.replace("{base}", owner.base).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.base = f"http://{host}:{self.server.server_address[1]}"
        self.pages = pages(self) if callable(pages) else dict(pages)
        self.thread = threading.Thread(target=self.server.serve_forever, name="page-server", daemon=True)
        self.thread.start()

    @property
    def destination(self) -> str:
        return self.base.removeprefix("http://")

    def reached(self, needle: str) -> bool:
        return any(needle in r for r in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "PageServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
