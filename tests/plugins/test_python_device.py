"""The python device, called the way the kernel calls it (Dispatcher: validation, grants, timeout)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import Dispatcher, GrantPolicy, SyscallResult
from llmos.plugins.python import device


@pytest.fixture()
def call(tmp_path: Path):
    registry = DeviceRegistry()
    registry.register(device)
    registry.start(tmp_path)
    dispatcher = Dispatcher(registry, GrantPolicy(granted=["process"]))

    def run(code: str, **args) -> SyscallResult:
        result = dispatcher.call_blocking("python.run", {"code": code, **args})
        assert result.ok, result.error
        return result

    return run


def test_prints(call):
    value = call("print(6 * 7)\nprint('hi')").value
    assert value == {"exit_status": 0, "stdout": "42\nhi\n", "stderr": "", "timed_out": False}


def test_exception_gives_nonzero_exit_and_traceback(call):
    value = call("def f():\n    raise ValueError('boom')\nf()").value
    assert value["exit_status"] != 0 and not value["timed_out"]
    assert "Traceback" in value["stderr"] and "ValueError: boom" in value["stderr"]
    assert 'File "snippet.py", line 2' in value["stderr"]


def test_infinite_loop_is_killed_at_the_timeout(call):
    start = time.monotonic()
    value = call("while True:\n    pass", timeout_s=1).value
    assert value["timed_out"] is True and value["exit_status"] != 0
    assert time.monotonic() - start < 60  # killed, not left running (only a hang fails here)


def test_memory_bomb_is_stopped(call):
    value = call("x = bytearray(2 * 1024 ** 3)\nprint('allocated')").value
    assert value["exit_status"] != 0 and "allocated" not in value["stdout"]
    assert "MemoryError" in value["stderr"]


def test_output_is_truncated(call):
    value = call("print('x' * 100_000)\nimport sys\nsys.stderr.write('e' * 50_000)").value
    assert value["exit_status"] == 0
    assert len(value["stdout"]) < 3_200 and "truncated" in value["stdout"]
    assert len(value["stderr"]) < 3_200 and "truncated" in value["stderr"]


def test_socket_connect_to_a_local_listener_fails(call):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted: list[object] = []
    listener.settimeout(5)
    thread = threading.Thread(target=lambda: _accept(listener, accepted), daemon=True)
    thread.start()
    try:
        code = (
            "import socket, urllib.request\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n"
            "except OSError as e:\n    print('refused:', e)\n"
            f"s = socket.socket()\ntry:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\n"
            "except OSError as e:\n    print('refused:', e)\n"
        )
        value = call(code).value
    finally:
        listener.close()
        thread.join(6)
    assert "connected" not in value["stdout"].replace("refused", "")
    assert value["stdout"].count("refused: network access is disabled") == 2
    assert accepted == []


def _accept(listener: socket.socket, accepted: list[object]) -> None:
    try:
        accepted.append(listener.accept())
    except OSError:
        pass


def test_files_land_only_in_a_temporary_folder_that_is_removed(call, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = "import os\nopen('out.txt', 'w').write('data')\nprint(os.getcwd())\nprint(os.listdir('.'))"
    value = call(code).value
    assert value["exit_status"] == 0, value["stderr"]
    cwd, listing = value["stdout"].splitlines()
    assert listing == "['out.txt']"
    assert Path(cwd) != tmp_path and not Path(cwd).exists()
    assert not (tmp_path / "out.txt").exists()


def test_timeout_is_validated_and_kernel_timeout_exceeds_it(call):
    call_spec = device.calls["run"]
    assert call_spec.side_effects is True
    assert call_spec.timeout_s > call_spec.parameters["properties"]["timeout_s"]["maximum"]


def test_permission_denied_without_the_process_grant(tmp_path: Path):
    registry = DeviceRegistry()
    registry.register(device)
    registry.start(tmp_path)
    result = Dispatcher(registry, GrantPolicy(granted=["network"])).call_blocking("python.run", {"code": "print(1)"})
    assert not result.ok and "permission denied" in result.error and "process" in result.error
    too_long = Dispatcher(registry, GrantPolicy(granted=["process"])).call_blocking(
        "python.run", {"code": "print(1)", "timeout_s": 3600})
    assert not too_long.ok and "invalid arguments" in too_long.error


def _running_with(token: str) -> list[int]:
    """Host pids of live processes whose command line holds ``token`` (zombies count as gone)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if token in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def test_background_children_are_killed_with_the_snippet(call):
    token = f"{60 + os.getpid() % 1000 / 1000:.3f}"  # a sleep nobody else runs
    value = call(f"import subprocess\np = subprocess.Popen(['sleep', '{token}'])\nprint(p.pid)").value
    assert value["exit_status"] == 0, value["stderr"]
    deadline = time.monotonic() + 5  # the kernel reaps a killed process group asynchronously
    while _running_with(f"sleep {token}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running_with(f"sleep {token}")
