"""`llmos serve`: the kernel's model for other programs, over OpenAI's HTTP API (app/server/).

    llmos serve [--host 127.0.0.1] [--port 8177] [--api-key KEY]

Loopback by default; any other address needs a key (``--api-key``, ``LLMOS_SERVE_API_KEY`` or the
config key ``serve_api_key``). The flags' defaults are the config's ``serve_host`` and ``serve_port``.
Wiring in app/cli.py: ``serve_cli.add_parser(sub)`` in ``_parser()``, and in ``main()``
``if args.command == "serve": return serve_cli.run(args, config)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from llmos.kernel.config import Config

DEFAULT_PORT = 8177


def add_parser(sub: Any) -> argparse.ArgumentParser:
    serve = sub.add_parser("serve", help="serve the model to other programs (an OpenAI-compatible API)")
    serve.add_argument("--host", default=None, help="address to listen on (default: serve_host, 127.0.0.1; "
                                                     "any other needs --api-key)")
    serve.add_argument("--port", type=int, default=None, help=f"port (default: serve_port, {DEFAULT_PORT})")
    # not dest api_key: the top-level --api-key is the remote backend's
    serve.add_argument("--api-key", dest="serve_api_key", metavar="KEY",
                       help="clients must send 'Authorization: Bearer KEY' (default: $LLMOS_SERVE_API_KEY, "
                            "then serve_api_key)")
    return serve


def serve_key(flag: str | None, config: Config) -> str | None:
    """The server's API key: the ``--api-key`` flag, else ``$LLMOS_SERVE_API_KEY``, else the config's."""
    return flag or os.environ.get("LLMOS_SERVE_API_KEY") or config.serve_api_key or None


def run(args: argparse.Namespace, config: Config) -> int:
    from llmos.app.boot import build_kernel
    from llmos.app.server.app import OS_MODEL, ServeOptions, make_app, plain_model_name
    from llmos.app.server.http import Server, ServeError, bind, check_bind

    key = serve_key(args.serve_api_key, config)
    host = args.host or config.serve_host
    port = args.port if args.port is not None else config.serve_port
    try:
        check_bind(host, key)
        sock = bind(host, port)  # before the model loads: a port in use is said at once
    except ServeError as exc:
        print(f"llmos: {exc}", file=sys.stderr)
        return 1
    print("llmos serve: loading the model ...", file=sys.stderr)
    kernel = build_kernel(config, grant_all=args.yes)
    kernel.start()
    try:
        kernel.wait_ready()
        server = Server(make_app(kernel, ServeOptions(api_key=key, max_waiting=config.serve_max_waiting)), sock)
        print(f"llmos serve: {server.url} (models: {plain_model_name(kernel)}, {OS_MODEL}); Ctrl-C stops",
              file=sys.stderr)
        server.run()
    finally:
        sock.close()
        kernel.shutdown()
    return 0

