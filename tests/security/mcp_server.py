"""A real stdio MCP server for the security tests whose tools come from a JSON file, so a test
can change them between runs (a rug pull), and whose descriptions can carry instructions.

    python mcp_server.py TOOLS.json   # [{"name": ..., "description": ..., "reply": ...}, ...]

Each tool takes one string argument ``text`` and answers ``reply`` (``{text}`` replaced). Every
call is appended to ``TOOLS.json.calls`` (what reached the server).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcp.server import MCPServer


def main() -> None:
    spec = Path(sys.argv[1])
    config = json.loads(spec.read_text())
    server = MCPServer("tests", instructions=config.get("instructions", ""))
    calls = spec.with_name(spec.name + ".calls")

    def make(tool: dict):
        def call(text: str) -> str:
            with calls.open("a") as f:
                f.write(json.dumps({"tool": tool["name"], "text": text}) + "\n")
            return str(tool.get("reply", "ok: {text}")).replace("{text}", text)
        return call

    for tool in config["tools"]:
        server.add_tool(make(tool), name=tool["name"], description=tool["description"])
    server.run()


if __name__ == "__main__":
    main()
