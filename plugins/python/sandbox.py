"""An OS-level sandbox for the python device: bubblewrap (Debian's ``bubblewrap``, set-up installs it).

The snippet runs in new namespaces (network, IPC, PID, UTS, cgroup, and user where the kernel
allows): its network namespace holds only its own loopback, so nothing on the host, loopback
included, can be reached. It sees a read-only view of the system folders (``/usr``, the library
links, the few ``/etc`` files the dynamic linker and Python read, and the Python environment it
runs in), a private ``/tmp``, and its own work folder as the only writable place. The user's home,
llmos's data directory and the rest of the filesystem are not there at all. Resource limits
(CPU, memory, file size, open files) are set by the device before ``exec``.

``sandbox_status()`` tells whether the sandbox works on this machine (checked once by running
``true`` inside it); ``llmos doctor`` shows it, and the device refuses to run code without it unless
the config opts out: ``[devices.python] sandbox = "off"``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxStatus", "WORK", "command", "sandbox_status"]

WORK = "/sandbox/work"  # the snippet's working folder, inside the sandbox
SNIPPET = "/sandbox/snippet.py"
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "ssl", "mime.types")
_SYSTEM = ("/usr",)


@dataclass(frozen=True)
class SandboxStatus:
    available: bool
    detail: str  # what works, or why not and how to fix it


def _bwrap() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def _system_binds() -> list[str]:
    args: list[str] = []
    for folder in _SYSTEM:
        if Path(folder).is_dir():
            args += ["--ro-bind", folder, folder]
    for name in ("bin", "sbin", "lib", "lib64", "lib32"):
        path = Path("/") / name
        if path.is_symlink():  # merged /usr: /lib -> usr/lib
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in _ETC:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _python_binds() -> list[str]:
    """The interpreter's own environment (a venv or a prefix outside /usr), read-only."""
    args: list[str] = []
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        if not prefix.startswith("/usr"):
            args += ["--ro-bind", prefix, prefix]
    return args


def command(python_args: list[str], root: Path) -> list[str]:
    """bwrap's argument list that runs ``python_args`` with ``root/work`` as the writable folder
    and ``root/snippet.py`` at :data:`SNIPPET` (read-only)."""
    bwrap = _bwrap() or "bwrap"
    return [
        bwrap, "--unshare-user-try", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        # after the private /tmp: an interpreter under /tmp (a checkout there) is bound onto it,
        # not hidden by it (bwrap mounts in order)
        *_python_binds(),
        "--bind", str(root / "work"), WORK, "--ro-bind", str(root / "snippet.py"), SNIPPET,
        "--remount-ro", "/",  # the sandbox's own root (where /etc's few files hang) is read-only too
        "--chdir", WORK, "--hostname", "sandbox",
        *python_args,
    ]


@functools.lru_cache(maxsize=1)
def sandbox_status() -> SandboxStatus:
    """Whether bubblewrap runs here (once per process: it runs ``true`` in a sandbox)."""
    bwrap = _bwrap()
    if bwrap is None:
        return SandboxStatus(False, "bubblewrap is not installed: `sudo apt-get install bubblewrap` (make setup does it)")
    probe = [bwrap, "--unshare-user-try", "--unshare-net", "--unshare-pid", "--die-with-parent", *_system_binds(),
             "--proc", "/proc", "--dev", "/dev", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxStatus(False, f"bubblewrap does not run here ({exc})")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return SandboxStatus(False, f"bubblewrap cannot make a sandbox here ({why}): user namespaces may be "
                                    "disabled (sysctl kernel.unprivileged_userns_clone=1)")
    return SandboxStatus(True, f"bubblewrap ({bwrap}): no network, read-only system, only its own folder writable")
