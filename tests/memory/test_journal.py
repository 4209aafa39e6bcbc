"""The journal (memory/journal.py): every message committed as it happens, resumable, exportable."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from llmos.app.boot import attach_journal, build_kernel
from llmos.kernel import events
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.config import Config
from llmos.kernel.loop import Kernel
from llmos.kernel.process import Message
from llmos.kernel.registry import DeviceRegistry
from llmos.memory.journal import MIGRATIONS, Journal, JournalError

CALC = ['CALL calculator.evaluate {"expression": "1234 * 5678"}', "ANSWER: It is 7006652."]


def start(backend: ScriptedBackend, path: Path) -> tuple[Kernel, Journal]:
    kernel = Kernel(backend, DeviceRegistry.from_entry_points())
    journal = attach_journal(kernel, path)
    kernel.start()
    kernel.wait_ready(10)
    return kernel, journal


def calculator_conversation(path: Path) -> str:
    """One turn with a calculator call, journaled at ``path``; returns the conversation id."""
    kernel, journal = start(ScriptedBackend(list(CALC)), path)
    try:
        pid = kernel.spawn("chat")
        result = kernel.submit(pid, "What is 1234 * 5678?").result(10)
        assert result.answer == "It is 7006652."
        return next(p["conversation"] for p in kernel.processes() if p["pid"] == pid)
    finally:
        kernel.shutdown()
        journal.close()


# --- the journal itself -----------------------------------------------------------------------


def test_a_turn_with_a_call_is_journaled_in_order(tmp_path):
    cid = calculator_conversation(tmp_path / "journal.sqlite3")
    journal = Journal(tmp_path / "journal.sqlite3")
    messages = journal.messages(cid)
    assert [(m.role, m.call) for m in messages] == [
        ("user", None), ("assistant", "calculator.evaluate"), ("tool", "calculator.evaluate"), ("assistant", None),
    ]
    assert messages[0].content == "What is 1234 * 5678?"
    assert json.loads(messages[1].content) == {"expression": "1234 * 5678"}
    assert messages[2].content == "7006652" and messages[2].trusted is True
    assert messages[3].content == "It is 7006652."
    # boot messages (system prompt, example turns) are put in at spawn, never journaled
    assert all(m.role != "system" for m in messages)
    [conv] = journal.conversations()
    assert conv["id"] == cid and conv["title"] == "What is 1234 * 5678?" and conv["messages"] == 4
    [syscall] = journal.syscalls(cid)
    assert syscall["device"] == "calculator" and syscall["call"] == "evaluate"
    assert syscall["arguments"] == {"expression": "1234 * 5678"} and syscall["result"] == "7006652"
    assert syscall["ok"] is True and syscall["seconds"] >= 0


def test_a_message_is_committed_before_other_observers_see_it(tmp_path):
    path = tmp_path / "journal.sqlite3"
    kernel, journal = start(ScriptedBackend(list(CALC)), path)
    seen: list[bool] = []

    def other_observer(event: events.Event) -> None:  # subscribed after the journal
        if isinstance(event, events.MessageAppended):
            with sqlite3.connect(path) as other:  # another connection: sees only committed rows
                rows = other.execute("SELECT content FROM messages WHERE conversation = ?",
                                     (event.conversation,)).fetchall()
            seen.append((event.content,) in rows)

    kernel.bus.subscribe(other_observer)
    try:
        kernel.ask("What is 1234 * 5678?").result(10)
    finally:
        kernel.shutdown()
    assert seen == [True, True, True, True]


def test_resume_restores_the_conversation_and_the_model_sees_it(tmp_path):
    path = tmp_path / "journal.sqlite3"
    cid = calculator_conversation(path)
    # a new kernel, as after a restart
    backend = ScriptedBackend(["ANSWER: Ten times that is 70066520."])
    kernel, journal = start(backend, path)
    try:
        history = journal.messages(cid[:6])  # a unique prefix is enough
        pid = kernel.spawn("chat", history=history, conversation=cid)
        result = kernel.submit(pid, "And ten times that?").result(10)
    finally:
        kernel.shutdown()
    assert result.answer == "Ten times that is 70066520."
    prompt = backend.history[-1]
    assert "What is 1234 * 5678?" in prompt and "It is 7006652." in prompt
    assert '<tool_response call="calculator.evaluate" trust="trusted">\n7006652' in prompt
    assert prompt.index("What is 1234 * 5678?") < prompt.index("It is 7006652.") < prompt.index("And ten times")
    assert prompt.count("<|im_start|>system") == 1  # boot messages once, not duplicated by the resume
    # the new turn continues the same conversation: one conversation, six messages in order
    [conv] = journal.conversations()
    assert conv["id"] == cid and conv["messages"] == 6
    assert [m.content for m in journal.messages(cid)][-2:] == ["And ten times that?", "Ten times that is 70066520."]


def test_export_markdown_and_json(tmp_path):
    cid = calculator_conversation(tmp_path / "journal.sqlite3")
    journal = Journal(tmp_path / "journal.sqlite3")
    md = journal.export(cid, "md")
    assert md.startswith("# What is 1234 * 5678?\n")
    order = [md.index(s) for s in ("What is 1234 * 5678?\n\n", "calls `calculator.evaluate`",
                                   '{"expression": "1234 * 5678"}', "7006652\n```", "It is 7006652.")]
    assert order == sorted(order)
    data = json.loads(journal.export(cid[:8], "json"))
    assert data["id"] == cid and data["title"] == "What is 1234 * 5678?"
    assert [(m["seq"], m["role"]) for m in data["messages"]] == [(1, "user"), (2, "assistant"), (3, "tool"),
                                                                 (4, "assistant")]
    assert data["messages"][3]["content"] == "It is 7006652."
    assert data["syscalls"][0]["result"] == "7006652"
    with pytest.raises(JournalError, match="format"):
        journal.export(cid, "html")


def test_migrations_are_applied_once(tmp_path):
    path = tmp_path / "journal.sqlite3"
    first = Journal(path)
    schema, applied = first.schema(), first.applied_migrations()
    first.close()
    assert [name for name, _ in applied] == [name for name, _ in MIGRATIONS]
    assert len({name for name, _ in MIGRATIONS}) == len(MIGRATIONS)  # names are unique
    second = Journal(path)
    assert second.schema() == schema
    assert second.applied_migrations() == applied  # same rows, same timestamps: nothing re-applied
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_journal_from_a_newer_llmos_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO migrations (name, applied) VALUES ('9999_from_the_future', 'x')")
    with pytest.raises(JournalError, match="newer llmos"):
        Journal(path)


@pytest.mark.parametrize("damage", ["garbage", "btree_page"])
def test_a_corrupt_journal_is_refused_with_one_line_naming_the_file(tmp_path, damage):
    path = tmp_path / "journal.sqlite3"
    if damage == "garbage":
        path.write_bytes(b"this is not a database\n" * 200)
    else:
        journal = Journal(path)
        for i in range(200):
            journal.append("c0ffee", Message("user", f"message {i} " + "x" * 400))
        journal.close()  # checkpoints the WAL into the main file
        data = bytearray(path.read_bytes())
        data[4096 * 2: 4096 * 2 + 12] = b"\x07" * 12  # a b-tree page header
        path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(JournalError) as info:
        Journal(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "not a usable SQLite database" in message
    assert path.read_bytes() == before  # never silently started over


def test_ids_accept_a_unique_prefix(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.append("abc123", Message("user", "first"))
    journal.append("abd456", Message("user", "second " * 30))
    assert journal.resolve("abc") == "abc123" and journal.resolve("ABD4") == "abd456"
    with pytest.raises(JournalError, match="ambiguous"):
        journal.resolve("ab")
    with pytest.raises(JournalError, match="no conversation 'zz'"):
        journal.messages("zz")
    assert journal.conversation("abd")["title"].endswith("...") and len(journal.conversation("abd")["title"]) == 60


def test_concurrent_appends_keep_every_message_in_sequence(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")

    def writer(n: int) -> None:
        for i in range(25):
            journal.append("shared", Message("user", f"{n}-{i}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sqlite3.connect(journal.path) as db:
        seqs = [r[0] for r in db.execute("SELECT seq FROM messages WHERE conversation = 'shared' ORDER BY seq")]
    assert seqs == list(range(1, 101))
    contents = [m.content for m in journal.messages("shared")]
    for n in range(4):
        mine = [c for c in contents if c.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}" for i in range(25)]  # each writer's order kept


def test_build_kernel_attaches_the_journal_in_the_data_dir(tmp_path):
    kernel = build_kernel(Config(data_dir=str(tmp_path)))
    assert kernel.journal.path == tmp_path / "journal.sqlite3"  # type: ignore[attr-defined]
    assert (tmp_path / "journal.sqlite3").is_file()
    assert kernel.bus._observers[0] == kernel.journal.observe  # type: ignore[attr-defined]  # first


# --- the command line (subprocess, no model needed) ------------------------------------------------


def llmos(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOS_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "llmos.app.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_cli_conversations_and_export(tmp_path):
    cid = calculator_conversation(tmp_path / "journal.sqlite3")
    done = llmos(tmp_path, "conversations", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["id"] == cid and row["messages"] == 4 and row["title"] == "What is 1234 * 5678?"
    done = llmos(tmp_path, "conversations")
    assert done.returncode == 0 and cid[:8] in done.stdout and "What is 1234 * 5678?" in done.stdout
    done = llmos(tmp_path, "export", cid[:8])
    assert done.returncode == 0 and "**Assistant** calls `calculator.evaluate`" in done.stdout
    out = tmp_path / "out.json"
    done = llmos(tmp_path, "export", cid[:8], "--format", "json", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["messages"][-1]["content"] == "It is 7006652."


@pytest.mark.parametrize("args", [("export", "0000nope"), ("chat", "--resume", "0000nope")])
def test_cli_unknown_id_is_one_line_and_exit_1(tmp_path, args):
    calculator_conversation(tmp_path / "journal.sqlite3")
    done = llmos(tmp_path, *args)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no conversation '0000nope'" in done.stderr
    assert "Traceback" not in done.stderr and "loading the model" not in done.stderr


def test_cli_corrupt_journal_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "journal.sqlite3").write_bytes(b"garbage" * 1000)
    done = llmos(tmp_path, "conversations")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and str(tmp_path / "journal.sqlite3") in done.stderr


def test_a_streaming_answer_is_journaled_at_every_piece_and_made_final(tmp_path):
    path = tmp_path / "journal.sqlite3"
    answer = " ".join(f"w{i}" for i in range(40))
    backend = ScriptedBackend([f"ANSWER: {answer}"])
    kernel = Kernel(backend, DeviceRegistry.from_entry_points())
    journal = attach_journal(kernel, path)
    seen: list[tuple[int, str, int]] = []
    streamed: list[str] = []
    reader = Journal(path)

    def watch(event):  # after the journal: what another OS process would read at this moment
        if isinstance(event, events.Token):
            streamed.append(event.text)
            cid = next(iter(journal._conversations.values()))
            rows = reader._rows(cid)
            seen.append((len(rows), rows[-1][2], rows[-1][6]))

    kernel.bus.subscribe(watch)
    kernel.start()
    try:
        pid = kernel.spawn("chat")
        result = kernel.submit(pid, "Count for me.").result(10)
        cid = next(p["conversation"] for p in kernel.processes() if p["pid"] == pid)
    finally:
        kernel.shutdown()
    assert result.answer == answer
    assert all(rows == 2 and partial == 1 for rows, _, partial in seen)  # the row exists from the first piece
    for n, (_, content, _) in enumerate(seen):
        assert content == "".join(streamed[: n + 1]).strip(), n  # committed at every piece
    assert len({content for _, content, _ in seen}) == len(seen) > 40  # a new text at each piece
    assert [(m.role, m.content) for m in journal.messages(cid)] == [("user", "Count for me."), ("assistant", answer)]
    assert journal.partial_answers(cid) == []  # final: one row, no longer partial
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again after the pieces
    reader.close()
    journal.close()


# --- SIGKILL in the middle of a reply ---------------------------------------------------------------

HELPER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from llmos.app.boot import attach_journal
    from llmos.kernel import events
    from llmos.kernel.backends.scripted import ScriptedBackend
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    story = "ANSWER: " + " ".join(f"word{i}" for i in range(5000))
    backend = ScriptedBackend(["ANSWER: Noted: heron.", story], delay_per_token=0.05)
    kernel = Kernel(backend, DeviceRegistry.from_entry_points())
    attach_journal(kernel, Path(sys.argv[1]))

    def ready(event):  # subscribed after the journal: the message is already committed
        if isinstance(event, events.MessageAppended) and event.content == "Tell me a long story.":
            print("READY", event.conversation, flush=True)
        if isinstance(event, events.Token) and event.text.startswith("word40 "):
            print("STREAMING", flush=True)

    kernel.bus.subscribe(ready)
    kernel.start()
    kernel.wait_ready(10)
    pid = kernel.spawn("chat")
    kernel.submit(pid, "My code word is heron.").result(30)
    kernel.submit(pid, "Tell me a long story.")
    time.sleep(300)
""")


def test_sigkill_mid_reply_loses_no_committed_message_and_keeps_the_partial_answer(tmp_path, capsys):
    script = tmp_path / "helper.py"
    script.write_text(HELPER)
    path = tmp_path / "journal.sqlite3"
    env = {**os.environ, "LLMOS_DATA_DIR": str(tmp_path)}
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not (lines and lines[-1].startswith("STREAMING")) and time.monotonic() < deadline:
            line = child.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line.strip())
        assert lines and lines[0].startswith("READY") and lines[-1] == "STREAMING", (lines, child.stderr)
        assert child.poll() is None  # still in the middle of the reply
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == -signal.SIGKILL
    cid = lines[0].split()[1]

    journal = Journal(path)
    assert journal.integrity_check() == "ok"
    messages = journal.messages(cid)
    assert [(m.role, m.content) for m in messages[:3]] == [
        ("user", "My code word is heron."), ("assistant", "Noted: heron."), ("user", "Tell me a long story."),
    ]
    # the answer that was streaming when the process died is kept as far as it was journaled
    assert len(messages) == 4 and messages[3].role == "assistant"
    story = " ".join(f"word{i}" for i in range(5000))
    partial = messages[3].content
    assert story.startswith(partial) and len(partial.split()) >= 24, partial
    assert journal.partial_answers(cid) == [4]
    assert "cut off while answering" in journal.export(cid, "md")
    assert json.loads(journal.export(cid, "json"))["messages"][3]["partial"] is True
    journal.close()
    from llmos.app import history_cli

    assert history_cli.resume(Config(data_dir=str(tmp_path)), cid[:8])["history"][3].content == partial
    assert "the last answer was cut off" in capsys.readouterr().err

    # a new kernel continues the conversation where it was cut
    backend = ScriptedBackend(["ANSWER: Your code word is heron."])
    kernel, journal = start(backend, path)
    try:
        pid = kernel.spawn("chat", history=journal.messages(cid), conversation=cid)
        result = kernel.submit(pid, "What was my code word?").result(10)
    finally:
        kernel.shutdown()
    assert result.answer == "Your code word is heron."
    assert "My code word is heron." in backend.history[-1] and "Tell me a long story." in backend.history[-1]
    assert partial in backend.history[-1]  # the resumed process sees what it had begun to say
    assert [m.content for m in journal.messages(cid)][-2:] == ["What was my code word?", "Your code word is heron."]
    assert journal.partial_answers(cid) == [4]  # only the cut answer is marked partial
    assert journal.integrity_check() == "ok"


# --- the real model ---------------------------------------------------------------------------------


@pytest.mark.model
def test_real_model_remembers_across_a_resume(real_backend, tmp_path):
    from tests.kernels import started

    path = tmp_path / "journal.sqlite3"
    registry = DeviceRegistry.from_entry_points()
    kernel = Kernel(real_backend, registry)
    journal = attach_journal(kernel, path)
    try:
        with started(kernel):
            pid = kernel.spawn("chat")
            kernel.submit(pid, "My name is Ada.").result(300)
            kernel.submit(pid, "I live in Lisbon.").result(300)
            cid = next(p["conversation"] for p in kernel.processes() if p["pid"] == pid)
    finally:
        journal.close()

    kernel = Kernel(real_backend, registry)
    journal = attach_journal(kernel, path)
    with started(kernel):
        history = journal.messages(cid)
        assert [m.content for m in history if m.role == "user"] == ["My name is Ada.", "I live in Lisbon."]
        pid = kernel.spawn("chat", history=history, conversation=cid)
        answer = kernel.submit(pid, "What is my name?").result(300).answer
    assert "Ada" in answer, answer
    assert journal.conversations()[0]["messages"] == 6
