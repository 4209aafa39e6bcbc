"""The security tests' real stdio MCP server (tests/security/mcp_server.py), configured for a test,
and the live processes running it: to check that a stopped registry leaves none behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SERVER = Path(__file__).parent / "security" / "mcp_server.py"


def notes_server(folder: Path, name: str = "notes") -> tuple[dict, Path]:
    """(the server's config table, its tools file: unique to it, so its processes can be found)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / f"{name}-tools.json"
    spec.write_text(json.dumps({"instructions": "Notes server.",
                                "tools": [{"name": "add_note", "description": "Store a note."}]}))
    return {"command": sys.executable, "args": [str(SERVER), str(spec)], "permissions": []}, spec


def running(spec: Path) -> int:
    """How many live (not zombie) processes have ``spec`` on their command line."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # it ended while we looked
        count += str(spec).encode() in argv and state != "Z"
    return count
