"""The `llmos` command: the command line in a child process, so that a native crash ends in one
line instead of a bare "Segmentation fault".

llama.cpp is native code: a GGUF it cannot read, or a build that does not suit this CPU, kills
the process with a signal, and Python can neither catch nor report it. So ``main`` (the console
entry point) forks before anything heavy is imported; the child runs :func:`llmos.app.cli.main`
with the same argv and stdio, marked ``LLMOS_SUPERVISED=1``, while the parent waits. The child
keeps a breadcrumb (``kernel/breadcrumb.py``: what it is doing in native code, the likely cause
if that crashes) in a page shared with the parent, and its ``faulthandler`` writes the native
and Python stacks to ``<data_dir>/crashes/<time>-<pid>.log``. When the child dies of SIGSEGV,
SIGABRT, SIGILL, SIGBUS or SIGFPE (or is SIGKILLed: most often the out-of-memory killer) the
parent prints one line naming what it was doing, the likely cause, the crash log and
``llmos doctor``, and exits 128 + the signal. The journal already holds every message and every
streamed piece of the answer (``memory/journal.py``), so nothing is lost.

Signals: the parent waits in ``sigwaitinfo``. A Ctrl-C or Ctrl-\\ from the terminal reaches the
whole foreground process group, the child included, so the parent only forwards a SIGINT or
SIGQUIT that was sent to it alone (``kill``); SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are always
forwarded. If the parent itself is killed, the child gets SIGTERM (Linux: PR_SET_PDEATHSIG).

A fork, not a second interpreter: the child starts with what the parent imported, so the
supervision costs a fork and a wait (``bench/bench_cli.py`` measures it on ``llmos --help``).
``python -m llmos.app.cli`` runs unsupervised, and so does a platform without ``fork`` or
``sigwaitinfo`` (Windows, macOS).
"""

from __future__ import annotations

import mmap
import os
import signal
import sys

from llmos.kernel import breadcrumb

ENV = "LLMOS_SUPERVISED"
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGILL, signal.SIGBUS, signal.SIGFPE})
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
TERMINAL = (signal.SIGINT, signal.SIGQUIT)  # the terminal sends these to the child as well
SI_KERNEL = 0x80  # si_code of a signal the kernel sent (the terminal's Ctrl-C), not kill()
PR_SET_PDEATHSIG = 1

# The likely cause by signal, when the signal says more than the breadcrumb does.
SIGNAL_CAUSES = {
    signal.SIGILL: "the llama.cpp build uses CPU instructions this CPU lacks (a build made for another machine)",
    signal.SIGBUS: "the model file changed, shrank or went away while it was mapped in memory",
    signal.SIGKILL: "the system ran out of memory and killed it (the model may be too large for this "
                    "machine's RAM), or something killed it from outside",
}
GENERIC_CAUSE = "a native library (llama.cpp, onnxruntime, chromadb, Qt) failed"


def _run_cli() -> int:
    from llmos.app.cli import main as cli_main

    return cli_main()


def main() -> int:
    """The `llmos` console entry point."""
    if os.environ.get(ENV) == "1" or not hasattr(os, "fork") or not hasattr(signal, "sigwaitinfo"):
        return _run_cli()  # supervised already, or no fork / sigwaitinfo (Windows, macOS): run here
    region = mmap.mmap(-1, breadcrumb.SIZE)  # anonymous and shared: the child writes, we read
    watched = {signal.SIGCHLD, *FORWARDED, *TERMINAL}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)  # before the fork: nothing is missed
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.environ[ENV] = "1"
        _die_with(parent)
        breadcrumb.attach(region)
        return _run_cli()
    code = _supervise(pid, region)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # nothing of ours to clean up: skip the interpreter's shutdown (it cost ~20 ms)


def _die_with(parent: int) -> None:
    """Have the kernel send this child SIGTERM when the supervisor dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the supervisor died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(pid: int, region: mmap.mmap) -> int:
    watched = {signal.SIGCHLD, *FORWARDED, *TERMINAL}
    forwarded: set[int] = set()
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo == signal.SIGCHLD:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                break
            continue
        if info.si_signo in TERMINAL and info.si_code == SI_KERNEL:
            continue  # from the terminal: the child, in the same process group, has it too
        try:
            os.kill(pid, info.si_signo)
            forwarded.add(info.si_signo)
        except ProcessLookupError:
            pass
    crumb = breadcrumb.read(region)
    if os.WIFEXITED(status):
        _drop_empty(crumb["crash_log"])
        return os.WEXITSTATUS(status)
    sig = os.WTERMSIG(status)
    if sig in CRASH_SIGNALS or (sig == signal.SIGKILL and sig not in forwarded):
        print(crash_line(sig, crumb), file=sys.stderr, flush=True)
        _append_report(sig, crumb)
    else:
        _drop_empty(crumb["crash_log"])
    return 128 + sig


def crash_line(sig: int, crumb: dict[str, str]) -> str:
    """The one line a crash ends in."""
    name = signal.Signals(sig).name
    who = crumb["native"] or "a native library"
    verb = "was killed" if sig == signal.SIGKILL else "crashed"
    doing = crumb["doing"] or "starting"
    cause = SIGNAL_CAUSES.get(sig) or crumb["cause"] or GENERIC_CAUSE
    log = crumb["crash_log"]
    kept = f"; the native stack is in {log}" if log and os.path.exists(log) else ""
    return (f"llmos: {who} {verb} ({name}) while {doing}, likely cause: {cause}; "
            f"the journal kept everything up to the crash{kept}; run `llmos doctor`")


def _append_report(sig: int, crumb: dict[str, str]) -> None:
    """Add what the supervisor knows to the crash log, below the stacks faulthandler wrote."""
    log = crumb["crash_log"]
    if not log:
        return
    import time

    try:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"\n--- llmos supervisor, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                      f"signal: {signal.Signals(sig).name}\nargv: {sys.argv!r}\n"
                      f"doing: {crumb['doing'] or '(nothing noted)'}\ncause: {crumb['cause'] or GENERIC_CAUSE}\n")
    except OSError:
        pass


def _drop_empty(log: str) -> None:
    """No crash, no crash log: remove the file faulthandler was given if nothing was written."""
    try:
        if log and os.path.getsize(log) == 0:
            os.remove(log)
    except OSError:
        pass


def arm_crash_log(data_dir: os.PathLike[str] | str, doing: str) -> str | None:
    """In the supervised child: send the stacks of a fatal signal to a new file under
    ``<data_dir>/crashes/`` and name it in the breadcrumb, with ``doing`` as the first note.
    Returns its path (None unsupervised)."""
    if not breadcrumb.attached():
        return None
    breadcrumb.note(doing)
    import faulthandler
    import time

    folder = os.path.join(os.fspath(data_dir), "crashes")
    path = os.path.join(folder, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    try:
        os.makedirs(folder, exist_ok=True)
        out = open(path, "w", encoding="utf-8")  # kept open: faulthandler writes to its descriptor
    except OSError:
        return None
    faulthandler.enable(file=out, all_threads=True)
    breadcrumb.set_crash_log(path)
    return path
