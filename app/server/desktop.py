"""The desktop's switch for `llmos serve`: the window's own kernel served to other programs.

Settings turns it on (config ``serve_enabled``, with ``serve_host``, ``serve_port``,
``serve_api_key`` and ``serve_max_waiting``). The window calls :meth:`DesktopServer.sync` with
its config and kernel whenever either changes: the server starts, stops, or moves to the new
kernel (a model switch stops it first, so no request reaches a kernel that is shutting down).
API requests are processes of the window's kernel at the ``api`` priority, below the window's chat
and voice turns, and show in its task manager. No Qt here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.kernel.config import Config

if TYPE_CHECKING:
    from llmos.kernel.loop import Kernel

    from .http import Server


class DesktopServer:
    def __init__(self) -> None:
        self._server: Server | None = None
        self._wanted: tuple[Any, ...] | None = None  # (kernel, host, port, key, max_waiting) it runs with

    @property
    def url(self) -> str | None:
        return self._server.url if self._server is not None else None

    def sync(self, config: Config | None, kernel: "Kernel | None") -> str | None:
        """Make the server match ``config`` on ``kernel``: a status line when something changed.

        Raises :class:`~llmos.app.server.http.ServeError` (one line) when it cannot start, for
        example a port in use or a public address without a key; the server is then off."""
        from .app import ServeOptions, make_app
        from .http import Server, bind, check_bind

        on = config is not None and config.serve_enabled and kernel is not None
        wanted = (kernel, config.serve_host, config.serve_port, config.serve_api_key or None,
                  config.serve_max_waiting) if on and config is not None else None
        if wanted == self._wanted:  # a kernel compares by identity
            return None
        was = self.url
        self.stop()
        if wanted is None:
            return f"Stopped serving on {was}." if was else None
        _, host, port, key, max_waiting = wanted
        check_bind(host, key)
        sock = bind(host, port)
        self._server = Server(make_app(kernel, ServeOptions(api_key=key, max_waiting=max_waiting)), sock).start()
        self._wanted = wanted
        return f"Serving the model to other programs on {self._server.url}."

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server, self._wanted = None, None
