"""The python device: run a Python snippet in a sandbox, in a separate, resource-limited process.

Each run gets a fresh temporary folder as its working directory (removed afterwards), limits on
CPU time, memory, file size, open files and processes (``resource.setrlimit`` before ``exec``),
and a scrubbed environment. The process runs inside an OS-level sandbox (:mod:`.sandbox`,
bubblewrap): no network at all (its own empty network namespace), a read-only view of the system,
only its own folder writable, and no view of the user's home or llmos's data. Without a working
sandbox the device refuses to run code, unless the config opts out with
``[devices.python] sandbox = "off"`` (then only the limits and a Python-level socket block remain,
which code that wants to can get around).
"""

from __future__ import annotations

import logging
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from llmos.kernel.devices import CallContext, Device, DeviceContext, Example

from . import sandbox

log = logging.getLogger(__name__)

MAX_TIMEOUT_S = 30.0
MAX_OUTPUT_CHARS = 3_000  # each; the kernel caps a whole result at 8,000 characters
MEMORY_BYTES = 512 * 1024 * 1024
FILE_BYTES = 16 * 1024 * 1024  # also bounds captured stdout/stderr (they go to files)
OPEN_FILES = 64
PROCESSES = 16  # note: the kernel ignores RLIMIT_NPROC for root

# Runs in the child before the snippet: no sockets, then the snippet as __main__.
_PRELUDE = r"""
import socket as _s, sys as _sys

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the llmos python device")

class _NoNetSocket(_s.socket):
    connect = connect_ex = bind = sendto = sendmsg = _no_network

_s.socket = _NoNetSocket
_s.create_connection = _s.getaddrinfo = _s.create_server = _no_network
del _s, _NoNetSocket, _no_network
_path = _sys.argv[1]
_sys.argv = ["snippet.py"]
with open(_path, encoding="utf-8") as _f:
    _code = compile(_f.read(), "snippet.py", "exec")
del _f, _path
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""

device = Device(
    "python",
    version="1.1.0",
    description="Run a short Python snippet in a sandboxed, resource-limited process and return its output.",
    permissions=["process"],
)
SANDBOX_MODES = ("required", "off")


@device.setup
def _setup(context: DeviceContext) -> str:
    """The instance's state is its sandbox mode."""
    mode = str(context.settings.get("sandbox", "required"))
    if mode not in SANDBOX_MODES:
        raise ValueError(f"[devices.python] sandbox = {mode!r}: use \"required\" or \"off\"")
    return mode


def _limits(cpu_s: int) -> None:
    """preexec_fn: runs in the child between fork and exec."""
    for limit, value in (
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_AS, MEMORY_BYTES),
        (resource.RLIMIT_FSIZE, FILE_BYTES),
        (resource.RLIMIT_NOFILE, OPEN_FILES),
        (resource.RLIMIT_NPROC, PROCESSES),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))


def _environment(home: Path, tmp_dir: str | None = None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": tmp_dir or str(home),
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "no_proxy": "*",
        "NO_PROXY": "*",
    }
    return env


def _read(path: Path) -> str:
    with path.open("rb") as f:
        data = f.read(MAX_OUTPUT_CHARS * 4 + 4)
        rest = f.seek(0, os.SEEK_END)
    text = data.decode("utf-8", errors="replace")
    if len(text) > MAX_OUTPUT_CHARS or rest > len(data):
        text = text[:MAX_OUTPUT_CHARS] + f"\n[... truncated: {rest:,} bytes in all]"
    return text


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@device.call(
    examples=[Example("Use Python to compute the first 10 Fibonacci numbers",
                      {"code": "a, b = 0, 1\nfor _ in range(10):\n    print(a)\n    a, b = b, a + b"})],
    timeout_s=MAX_TIMEOUT_S + 10,
    side_effects=True,
)
def run(code: str, context: CallContext,
        timeout_s: Annotated[float, {"exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S}] = 5.0) -> dict[str, Any]:
    """Run Python code in a fresh process and return its exit status, stdout and stderr.

    The code runs in a sandbox, in an empty temporary folder (deleted afterwards), with no network,
    512 MB of memory and a time limit. Print what you want to see.

    Args:
        code: The Python source to run, e.g. 'print(sum(range(10)))'.
        timeout_s: Seconds before the process is killed (at most 30).
    """
    timeout_s = min(float(timeout_s), MAX_TIMEOUT_S)
    boxed = context.state != "off"  # "required", or a device that was not started
    if boxed and not (status := sandbox.sandbox_status()).available:
        raise RuntimeError(f"python.run refuses to run code without a sandbox: {status.detail}; "
                           "or set [devices.python] sandbox = \"off\" in the config")
    with tempfile.TemporaryDirectory(prefix="llmos-python-") as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        snippet, out_path, err_path = root / "snippet.py", root / "stdout", root / "stderr"
        snippet.write_text(code, encoding="utf-8")
        cpu_s = math.ceil(timeout_s) + 1
        start = time.monotonic()
        argv = [sys.executable, "-I", "-c", _PRELUDE]
        if boxed:
            argv = sandbox.command([*argv, sandbox.SNIPPET], root)
            env = _environment(Path(sandbox.WORK), tmp_dir="/tmp")
        else:
            argv, env = [*argv, str(snippet)], _environment(work)
        with out_path.open("wb") as out, err_path.open("wb") as err:
            with context.commit():  # a cancelled call never starts the snippet
                process = subprocess.Popen(
                    argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    preexec_fn=lambda: _limits(cpu_s), start_new_session=True, close_fds=True,
                )
                context.on_cancel(lambda: _kill_group(process))  # and a cancel kills it
            timed_out = False
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                log.info("python snippet exceeded %.1f s: killing process group %d", timeout_s, process.pid)
            finally:
                _kill_group(process)  # the snippet's children too
                process.wait()
        log.debug("python snippet exited %s after %.2f s", process.returncode, time.monotonic() - start)
        return {
            "exit_status": process.returncode,
            "stdout": _read(out_path),
            "stderr": _read(err_path),
            "timed_out": timed_out,
        }
