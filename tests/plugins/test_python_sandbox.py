"""The python device's sandbox is a boundary: the escapes that got through a Python-level block fail."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path

import pytest

from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import Dispatcher, GrantPolicy
from llmos.plugins.python import device, sandbox


def _registry(tmp_path: Path, settings: dict | None = None) -> Dispatcher:
    registry = DeviceRegistry()
    registry.register(device)
    registry.start(tmp_path, settings={"python": settings or {}})
    return Dispatcher(registry, GrantPolicy(granted=["process"]))


@pytest.fixture()
def run(tmp_path: Path):
    dispatcher = _registry(tmp_path)

    def go(code: str) -> dict:
        result = dispatcher.call_blocking("python.run", {"code": code, "timeout_s": 10})
        assert result.ok, result.error
        return result.value

    return go


@pytest.fixture()
def listener():
    """A real HTTP server on the host's loopback that records every request it gets."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    thread.join()


def test_the_sandbox_works_on_this_machine():
    status = sandbox.sandbox_status()
    assert status.available, status.detail  # make setup installs bubblewrap


ESCAPES = {
    "raw _socket": "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n"
                   "s.send(b'GET /raw?secret=1 HTTP/1.0\\r\\n\\r\\n')\nprint('sent')",
    "ctypes connect": "import ctypes, struct, socket as _\nlibc = ctypes.CDLL(None)\nfd = libc.socket(2, 1, 0)\n"
                      "addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
                      "addr = struct.pack('=H', 2) + addr[2:]\n"
                      "r = libc.connect(fd, ctypes.c_char_p(addr), 16)\nprint('connect', r)\n"
                      "assert r == 0\nlibc.write(fd, b'GET /ctypes HTTP/1.0\\r\\n\\r\\n', 26)\nprint('sent')",
    "a subprocess": "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import urllib.request as u; "
                    "u.urlopen(\"http://127.0.0.1:{port}/child\", timeout=3)'], check=True)\nprint('sent')",
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_no_network_escape_reaches_the_host(run, listener, name):
    port, seen = listener
    value = run(ESCAPES[name].format(port=port))
    assert "sent" not in value["stdout"], value
    assert value["exit_status"] != 0
    assert seen == []  # the server on the host's loopback heard nothing


def test_writes_land_only_in_the_sandbox(run, tmp_path):
    marker = Path("/tmp") / f"llmos-escape-{tmp_path.name}"
    value = run(f"open('{marker}', 'w').write('x')\nopen('kept.txt', 'w').write('ok')\nprint('wrote')")
    assert value["exit_status"] == 0 and "wrote" in value["stdout"]  # its own /tmp and folder work
    assert not marker.exists()  # ... but the host's /tmp never saw the file
    for target in ("/usr/lib/llmos-escape", str(Path.home() / "llmos-escape"), "/etc/llmos-escape"):
        denied = run(f"open('{target}', 'w').write('x')")
        assert denied["exit_status"] != 0 and ("Read-only" in denied["stderr"] or "No such file" in denied["stderr"])
        assert not Path(target).exists()


def test_the_users_files_and_llmos_data_are_not_visible(run, tmp_path):
    secret = tmp_path / ".ssh" / "id_ed25519"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    for path in (secret, Path.home() / ".local" / "share" / "llmos", Path.home() / ".ssh"):
        value = run(f"import os\nprint(os.listdir('{path}') if os.path.isdir('{path}') else open('{path}').read())")
        assert value["exit_status"] != 0 and "PRIVATE KEY" not in value["stdout"], (path, value)
    # the home folder shows at most the way to the Python installation the snippet runs on
    value = run(f"import json, os\nprint(json.dumps(os.listdir('{Path.home()}') if os.path.isdir('{Path.home()}') else []))")
    interpreter = {Path(p).relative_to(Path.home()).parts[0] for p in {sys.prefix, sys.base_prefix}
                   if Path(p).is_relative_to(Path.home())}
    assert value["exit_status"] == 0 and set(json.loads(value["stdout"])) <= interpreter, value


def test_numpy_and_the_standard_library_still_work(run):
    value = run("import json, numpy\nprint(json.dumps(int(numpy.arange(10).sum())))")
    assert value == {"exit_status": 0, "stdout": "45\n", "stderr": "", "timed_out": False}


def test_without_a_sandbox_the_device_refuses_unless_the_config_opts_out(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    sandbox.sandbox_status.cache_clear()
    try:
        refused = _registry(tmp_path / "a").call_blocking("python.run", {"code": "print(1)"})
        assert not refused.ok and "without a sandbox" in refused.error and "bubblewrap" in refused.error
        assert 'sandbox = "off"' in refused.error and "\n" not in refused.error
        opted_out = _registry(tmp_path / "b", {"sandbox": "off"}).call_blocking("python.run", {"code": "print(1)"})
        assert opted_out.ok and opted_out.value["stdout"] == "1\n"
    finally:
        sandbox.sandbox_status.cache_clear()


def test_a_bad_sandbox_setting_is_refused_at_start(tmp_path):
    registry = DeviceRegistry()
    registry.register(device)
    registry.start(tmp_path, settings={"python": {"sandbox": "maybe"}})
    [broken] = registry.broken
    assert broken.name == "python" and "required" in broken.error and "python" not in [d.name for d in registry.devices()]


def test_an_interpreter_under_tmp_is_bound_after_the_private_tmp(tmp_path, monkeypatch):
    # bwrap mounts in order: a venv bound before --tmpfs /tmp is hidden by it (a checkout in /tmp
    # then ran nothing: "bwrap: execvp .../.venv/bin/python: No such file or directory")
    from llmos.plugins.python import sandbox

    monkeypatch.setattr(sandbox.sys, "prefix", "/tmp/checkout/.venv")
    args = sandbox.command(["python", "-c", "pass"], tmp_path)
    assert args.index("--tmpfs") < args.index("/tmp/checkout/.venv")
