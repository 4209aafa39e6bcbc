"""A native crash loses nothing and says something (llmos issue 11, item 3).

`llmos` (app/supervisor.py) runs the command line in a child; these tests run the real console
script and make the child die of a signal where a native crash would happen
(kernel/crash_hooks.py: LLMOS_TEST_CRASH), then read the one line, the crash log and the journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.kernel import crash_hooks
from llmos.memory.journal import Journal

LLMOS = str(Path(sys.executable).with_name("llmos"))  # the console script, as a user runs it


def llmos(data_dir: Path, *args: str, crash: str = "", timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOS_TEST_CRASH": crash}
    env.pop("LLMOS_SUPERVISED", None)
    return subprocess.run([LLMOS, "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def crash_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("llmos: ") and "run `llmos doctor`" in line]


def crash_logs(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "crashes").glob("*.log")) if (data_dir / "crashes").is_dir() else []


# --- the crash points ------------------------------------------------------------------------------


def test_crash_specs_parse_and_bad_ones_are_refused():
    assert crash_hooks.parse("decode:3@SEGV, load@abrt,grammar") == {
        "decode": [3, signal.SIGSEGV, 0], "load": [1, signal.SIGABRT, 0], "grammar": [1, signal.SIGSEGV, 0]}
    assert crash_hooks.parse("") == {}
    for bad, why in [("nowhere", "unknown point"), ("decode:0", "not a count"), ("decode@NOPE", "unknown signal")]:
        with pytest.raises(crash_hooks.CrashSpecError, match=why):
            crash_hooks.parse(bad)


# --- the line, the exit code and the crash log, without the model --------------------------------------


@pytest.mark.parametrize("sig, cause", [
    ("SEGV", "a native library"), ("ABRT", "a native library"),
    ("ILL", "CPU instructions this CPU lacks"), ("BUS", "model file changed"), ("FPE", "a native library"),
])
def test_a_crash_ends_in_one_line_naming_the_cause_the_log_and_doctor(tmp_path, sig, cause):
    done = llmos(tmp_path, "devices", crash=f"start@{sig}")
    number = getattr(signal, f"SIG{sig}")
    assert done.returncode == 128 + number
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and crash_lines(done.stderr) == lines, done.stderr  # one line, nothing else
    line = lines[0]
    assert f"(SIG{sig})" in line and "while running `llmos devices`" in line and cause in line
    assert "the journal kept everything up to the crash" in line
    [log] = crash_logs(tmp_path)
    assert str(log) in line
    text = log.read_text()
    assert "Fatal Python error" in text and "crash_hooks.py" in text  # faulthandler's stack of the crash
    assert f"signal: SIG{sig}" in text and "doing: running `llmos devices`" in text  # the supervisor's report


def test_a_sigkill_says_what_it_most_likely_was(tmp_path):
    done = llmos(tmp_path, "devices", crash="start@KILL")
    assert done.returncode == 128 + signal.SIGKILL
    [line] = crash_lines(done.stderr)
    assert "was killed (SIGKILL)" in line and "ran out of memory" in line


def test_a_normal_run_passes_its_exit_code_and_output_through_and_leaves_no_crash_log(tmp_path):
    done = llmos(tmp_path, "devices", "call", "calculator.evaluate", "--args", '{"expression": "6*7"}')
    assert done.returncode == 0 and done.stdout.strip() == "42" and done.stderr == ""
    done = llmos(tmp_path, "devices", "call", "calculator.evaluate", "--args", "not json")
    assert done.returncode == 1 and "--args is not valid JSON" in done.stderr and not crash_lines(done.stderr)
    done = llmos(tmp_path, "ask")  # a usage error: argparse's exit code
    assert done.returncode == 2 and "the following arguments are required: text" in done.stderr
    assert crash_logs(tmp_path) == []  # the empty logs of runs that did not crash are gone


def test_unsupervised_runs_do_not_fork_and_die_as_before(tmp_path):
    env = {**os.environ, "LLMOS_TEST_CRASH": "start@ABRT"}
    done = subprocess.run([sys.executable, "-m", "llmos.app.cli", "--data-dir", str(tmp_path), "devices"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == -signal.SIGABRT and not crash_lines(done.stderr)
    env["LLMOS_SUPERVISED"] = "1"  # the child of a supervisor does not supervise again
    done = subprocess.run([LLMOS, "--data-dir", str(tmp_path), "devices"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == -signal.SIGABRT and not crash_lines(done.stderr)


# --- signals pass through ----------------------------------------------------------------------------


@pytest.fixture()
def held_request() -> Iterator[tuple[str, threading.Event]]:
    """A loopback HTTP server that accepts a request and never answers: the browser waits on it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    arrived = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        held.append(conn)
        conn.recv(4096)
        arrived.set()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/", arrived
    for conn in held:
        conn.close()
    server.close()


def _waiting_llmos(tmp_path: Path, url: str, **kw) -> subprocess.Popen[str]:
    env = {**os.environ}
    env.pop("LLMOS_SUPERVISED", None)
    env.pop("LLMOS_TEST_CRASH", None)
    return subprocess.Popen([LLMOS, "--data-dir", str(tmp_path), "devices", "call", "browser.open", "--args",
                             json.dumps({"url": url}), "--yes"], text=True, env=env, **kw)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_a_signal_sent_to_llmos_reaches_the_command(tmp_path, held_request, sig, code):
    url, arrived = held_request
    child = _waiting_llmos(tmp_path, url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert arrived.wait(60), "the browser never asked"
        child.send_signal(sig)  # to the supervisor alone, as `kill` does: it must forward it
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == code, err
    assert not crash_lines(err) and "Traceback" not in err


def _own_terminal() -> None:  # in the child: the pty becomes the controlling terminal of its new session
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _on_a_terminal(argv: list[str], **kw) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``argv`` on a new pseudo-terminal, as a shell runs a command in the foreground."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("LLMOS_SUPERVISED", "LLMOS_TEST_CRASH")}
    child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                             preexec_fn=_own_terminal, env=env, **kw)
    os.close(slave)
    return child, master


class _Screen:
    """What the terminal shows, read as it comes; :meth:`wait` moves past each thing awaited."""

    def __init__(self, master: int) -> None:
        self.master, self.text, self.pos = master, "", 0

    def wait(self, needle: str, timeout: float = 300) -> str:
        """Read until ``needle`` shows after the last thing awaited; returns what came before it."""
        deadline = time.monotonic() + timeout
        while (found := self.text.find(needle, self.pos)) < 0:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            try:
                chunk = os.read(self.master, 65536) if ready else b""
            except OSError:  # EIO: the command has gone
                chunk = b""
            if not chunk:
                raise AssertionError(f"{needle!r} never appeared; the terminal shows: {self.text[-2000:]!r}")
            self.text += chunk.decode(errors="replace")
        before, self.pos = self.text[self.pos:found], found + len(needle)
        return before


def _drain(master: int) -> str:
    out = b""
    while select.select([master], [], [], 0)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_ctrl_c_on_the_terminal_stops_the_command(tmp_path, held_request):
    url, arrived = held_request
    child, master = _on_a_terminal([LLMOS, "--data-dir", str(tmp_path), "devices", "call", "browser.open",
                                    "--args", json.dumps({"url": url}), "--yes"])
    try:
        assert arrived.wait(60), "the browser never asked"
        os.write(master, b"\x03")  # Ctrl-C: the terminal signals the foreground process group
        child.wait(60)
        text = _drain(master)
    finally:
        if child.poll() is None:
            child.kill()
        os.close(master)
    assert child.returncode == 130, text
    assert "run `llmos doctor`" not in text and "Traceback" not in text


# --- the real model: the crash points inside llama.cpp's work ------------------------------------------


@pytest.fixture(scope="module")
def model_data() -> Path:
    """The test run's data directory (tests/conftest.py), passed with --data-dir: the engine choice
    and the calibration other CLI tests made are reused. Our conversations have their own titles."""
    return Path(os.environ["LLMOS_DATA_DIR"])


@pytest.mark.model
def test_a_crash_while_loading_the_model_names_the_model_and_the_engine_path(model_data, model_path):
    done = llmos(model_data, "--model", str(model_path), "ask", "Hello there.", crash="load@SEGV", timeout=600)
    assert done.returncode == 139, done.stderr
    [line] = crash_lines(done.stderr)
    assert line.startswith("llmos: llama.cpp crashed (SIGSEGV) while loading ")
    assert f"{model_path} with engine path " in line and "a model file this llama.cpp cannot read" in line


@pytest.mark.model
def test_a_crash_mid_answer_keeps_the_question_and_the_streamed_answer(model_data, model_path):
    question = "Write two friendly sentences about the sea."
    done = llmos(model_data, "ask", question, "--yes", crash="decode:12@SEGV", timeout=600)
    assert done.returncode == 139, done.stderr
    [line] = crash_lines(done.stderr)
    assert line.startswith("llmos: llama.cpp crashed (SIGSEGV) while decoding for process ")
    assert "likely cause: engine path " in line and "run `llmos doctor`" in line
    log = Path(line.split("the native stack is in ")[1].split(";")[0])
    assert log.parent == model_data / "crashes" and "Segmentation fault" in log.read_text()

    streamed = done.stdout.strip()
    assert streamed, "nothing was streamed before the crash"
    journal = Journal(model_data / "journal.sqlite3")
    try:
        conversation = next(c for c in journal.conversations(None) if c["title"] == question)  # the latest
        messages = journal.messages(conversation["id"])
        assert [m.role for m in messages] == ["user", "assistant"] and messages[0].content == question
        assert messages[1].content == streamed  # every piece the user saw, none lost
        assert journal.partial_answers(conversation["id"]) == [2]
        assert journal.integrity_check() == "ok"
    finally:
        journal.close()


@pytest.mark.model
def test_a_crash_compiling_a_grammar_names_the_call(model_data):
    done = llmos(model_data, "ask", "What is 1234 * 5678?", "--yes", crash="grammar@ABRT", timeout=600)
    assert done.returncode == 134, done.stderr
    [line] = crash_lines(done.stderr)
    assert "crashed (SIGABRT) while compiling the grammar of calculator.evaluate's arguments" in line


@pytest.mark.model
def test_ctrl_c_in_chat_stops_the_reply_once_and_chat_goes_on(model_data):
    """The terminal's Ctrl-C reaches the child once: the reply stops and the chat waits for the next
    message (a second SIGINT, forwarded by the supervisor, would end the chat instead)."""
    child, master = _on_a_terminal([LLMOS, "--data-dir", str(model_data), "chat"])
    screen = _Screen(master)
    try:
        screen.wait("type a message", timeout=540)  # a first run calibrates the model
        screen.wait("> ")
        os.write(master, b"Tell me a long story about a dragon who learns to bake bread.\r")
        screen.wait("bake bread.")  # the terminal's echo
        streamed = ""
        while len(streamed.strip()) < 40:  # the answer is streaming
            streamed += screen.wait(" ") + " "
        os.write(master, b"\x03")
        screen.wait("[stopped]")
        screen.wait("> ")
        os.write(master, b"\x04")  # Ctrl-D: quit
        child.wait(60)
        text = screen.text + _drain(master)
    finally:
        if child.poll() is None:
            child.kill()
        os.close(master)
    assert child.returncode == 0, text
    assert "Traceback" not in text and "run `llmos doctor`" not in text
