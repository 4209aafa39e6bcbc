"""An MCP server named in the config appears among the devices, as a user would configure it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_configured_mcp_server_is_listed_and_callable(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        "[mcp.servers.clock]\n"
        f"command = {json.dumps(sys.executable)}\n"
        'args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]\n'
        "permissions = []\n"
    )
    env = {**os.environ, "LLMOS_CONFIG": str(config), "LLMOS_DATA_DIR": str(tmp_path / "data")}
    listed = subprocess.run([sys.executable, "-m", "llmos.app.cli", "devices", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    devices = {d["name"]: d for d in json.loads(listed.stdout)["devices"]}
    assert "clock.get_current_time" in [c["name"] for c in devices["clock"]["calls"]]
    called = subprocess.run([sys.executable, "-m", "llmos.app.cli", "devices", "--json", "call",
                             "clock.get_current_time", "--args", '{"timezone": "UTC"}'],
                            capture_output=True, text=True, env=env, timeout=120)
    result = json.loads(called.stdout)
    assert result["ok"] and result["trusted"] is False and "UTC" in json.dumps(result["result"])


def test_a_broken_mcp_server_is_reported_and_the_rest_works(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[mcp.servers.ghost]\ncommand = "/no/such/server"\n')
    env = {**os.environ, "LLMOS_CONFIG": str(config), "LLMOS_DATA_DIR": str(tmp_path / "data")}
    listed = subprocess.run([sys.executable, "-m", "llmos.app.cli", "devices", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(listed.stdout)
    assert "calculator" in {d["name"] for d in out["devices"]}
    assert any("ghost" in b["name"] for b in out["broken"])
