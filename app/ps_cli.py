"""`llmos ps`: the process table of a running kernel that serves (`llmos serve`, or the desktop
window with Settings → Serving on), read over its API (``GET /llmos/processes``).

    llmos ps [--url http://127.0.0.1:8177] [--json]

The URL's default is the config's ``serve_host`` and ``serve_port``; the key, when the server has
one, is ``--api-key``, ``LLMOS_SERVE_API_KEY`` or ``serve_api_key``.
Wiring in app/cli.py: ``ps_cli.add_parser(sub)`` and ``if args.command == "ps": return ps_cli.run(args, config)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llmos.app.serve_cli import serve_key
from llmos.kernel.config import Config

COLUMNS = (("PID", "pid"), ("PRIORITY", "priority"), ("STATE", "state"), ("TOKENS", "tokens_generated"),
           ("MODEL S", "model_seconds"), ("NAME", "name"))


def add_parser(sub: Any) -> argparse.ArgumentParser:
    ps = sub.add_parser("ps", help="list the processes of a running llmos serve (or of the serving desktop)")
    ps.add_argument("--url", help="the server (default: http://<serve_host>:<serve_port>)")
    ps.add_argument("--api-key", dest="serve_api_key", metavar="KEY",
                    help="the server's key (default: $LLMOS_SERVE_API_KEY, then serve_api_key)")
    ps.add_argument("--json", action="store_true", help="machine-readable output")
    return ps


def run(args: argparse.Namespace, config: Config) -> int:
    import httpx

    host = f"[{config.serve_host}]" if ":" in config.serve_host else config.serve_host
    url = (args.url or f"http://{host}:{config.serve_port}").rstrip("/").removesuffix("/v1")
    key = serve_key(args.serve_api_key, config)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{url}/llmos/processes", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"llmos: no llmos server answers at {url} ({exc}); start `llmos serve`, or turn serving on in "
              "the desktop's Settings", file=sys.stderr)
        return 1
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body.get("processes"), list):
        message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
        print(f"llmos: {url} answered {response.status_code}: {message or 'not an llmos server'}", file=sys.stderr)
        return 1
    processes: list[dict[str, Any]] = body["processes"]
    if args.json:
        print(json.dumps(processes, indent=2))
        return 0
    print(table(processes))
    return 0


def table(processes: list[dict[str, Any]]) -> str:
    rows = [[title for title, _ in COLUMNS]] + [[str(p.get(key, "")) for _, key in COLUMNS] for p in processes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows)
