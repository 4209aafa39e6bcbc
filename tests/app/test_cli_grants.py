"""`llmos devices grant|revoke` and the permission listing, as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _llmos(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOS_DATA_DIR": str(tmp_path), "LLMOS_CONFIG": str(tmp_path / "none.toml")}
    return subprocess.run([sys.executable, "-m", "llmos.app.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


def _granted(tmp_path) -> dict[str, list[str]]:
    done = _llmos(tmp_path, "devices", "--json")
    assert done.returncode == 0, done.stderr
    return {d["name"]: d["granted"] for d in json.loads(done.stdout)["devices"]}


def test_grant_list_revoke(tmp_path):
    assert _granted(tmp_path)["browser"] == []
    text = _llmos(tmp_path, "devices").stdout
    assert "network (not granted)" in text
    done = _llmos(tmp_path, "devices", "grant", "browser", "network")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "grants.json").read_text()) == {"browser": ["network"]}
    assert _granted(tmp_path)["browser"] == ["network"]
    assert "network (granted)" in _llmos(tmp_path, "devices").stdout
    done = _llmos(tmp_path, "devices", "revoke", "browser")
    assert done.returncode == 0, done.stderr
    assert _granted(tmp_path)["browser"] == []


def test_grant_rejects_unknown_device_and_permission(tmp_path):
    bad_device = _llmos(tmp_path, "devices", "grant", "toaster", "network")
    assert bad_device.returncode == 1 and "no device 'toaster'" in bad_device.stderr
    assert len(bad_device.stderr.strip().splitlines()) == 1
    bad_perm = _llmos(tmp_path, "devices", "revoke", "browser", "teleport")
    assert bad_perm.returncode == 1 and "unknown permission 'teleport'" in bad_perm.stderr
    assert not (tmp_path / "grants.json").exists()


def test_network_device_refused_without_grant_then_allowed_after_devices_grant(tmp_path):
    args = ("devices", "call", "browser.open", "--args", '{"url": "http://127.0.0.1:9/"}')
    denied = _llmos(tmp_path, *args)
    assert denied.returncode == 1
    assert "permission denied" in denied.stderr and "llmos devices grant browser network" in denied.stderr
    assert _llmos(tmp_path, "devices", "grant", "browser", "network").returncode == 0
    allowed = _llmos(tmp_path, *args)  # runs now: fails only on the closed port
    assert "permission denied" not in allowed.stderr, allowed.stderr
    assert "could not open http://127.0.0.1:9/" in allowed.stderr


def test_tty_permission_prompt_wording_and_answers(monkeypatch, capsys):
    from llmos.app.cli import _tty_permission
    from llmos.kernel.devices import Permission

    monkeypatch.setattr("builtins.input", lambda: "y")
    assert _tty_permission("browser", [Permission.NETWORK], "Web pages.") is True
    assert "Device 'browser' needs permission: network. Allow? [y/N]" in capsys.readouterr().err
    monkeypatch.setattr("builtins.input", lambda: "")
    assert _tty_permission("browser", [Permission.NETWORK], "Web pages.") is False

    def eof():
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)
    assert _tty_permission("browser", [Permission.NETWORK], "Web pages.") is False
