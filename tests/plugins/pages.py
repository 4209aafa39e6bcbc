"""A local web site for device tests: HTML pages served from 127.0.0.1 on an ephemeral port."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class LocalSite:
    url: str  # http://127.0.0.1:PORT
    requests: list[str] = field(default_factory=list)  # every path asked for, in order


@contextmanager
def serve(page: Callable[[str], str | None]) -> Iterator[LocalSite]:
    """Serve ``page(path)`` as HTML (None = 404) until the block ends."""
    site = LocalSite("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            site.requests.append(self.path)
            body = page(self.path)
            data = (body if body is not None else "<html><body>not found</body></html>").encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    site.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()
