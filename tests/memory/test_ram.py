"""`llmos memory ram`: a process's context window, as the journal recorded it for another OS process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.app.boot import attach_journal
from llmos.app.memory_cli import format_ram
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.loop import Kernel
from llmos.kernel.paging import RECALL_HEADER
from llmos.kernel.process import Message
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import TurnOptions
from llmos.memory.journal import Journal, JournalError


class ListPager:
    """Pages out to a list; pages in a fixed fact (the real DiskPager runs in the model test)."""

    def __init__(self) -> None:
        self.stored: list[str] = []

    def page_out(self, conversation: str, turns: list[list[Message]]) -> list[str]:
        summaries = [f"the user said: {t[0].content[:40]}" for t in turns]
        self.stored.extend(summaries)
        return summaries

    def page_in(self, conversation: str, query: str, budget_chars: int) -> list[str]:
        return ["an old fact about herons"] if "heron" in query else []


def budget() -> int:
    """The boot pages' measured size plus room for about two turns: eviction is certain."""
    from llmos.kernel.prompt import render
    from llmos.kernel.turn import boot_messages

    return len(ScriptedBackend().tokenize(render(boot_messages(DeviceRegistry())))) + 150


def chat(path: Path, turns: list[str], ram_tokens: int | None = None) -> tuple[str, int]:
    """Run ``turns`` in one process journaled at ``path``; returns (conversation, pid)."""
    backend = ScriptedBackend(responder=lambda prompt: "ANSWER: " + "fine " * 20)
    kernel = Kernel(backend, DeviceRegistry(), TurnOptions(ram_tokens=ram_tokens or budget()), pager=ListPager())
    journal = attach_journal(kernel, path)
    kernel.start()
    try:
        pid = kernel.spawn("chat")
        for text in turns:
            kernel.submit(pid, text).result(10)
        live = kernel.ram(pid)
        cid = next(p["conversation"] for p in kernel.processes() if p["pid"] == pid)
    finally:
        kernel.shutdown()
        journal.close()
    journal = Journal(path)
    recorded = journal.ram(cid)["ram"]
    journal.close()
    # what the journal holds is what the kernel reported at the end of the last turn
    assert recorded["tokens"] == live.tokens and [p["kind"] for p in recorded["pages"]] == [p.kind for p in live.pages]
    return cid, pid


def test_the_journal_keeps_the_latest_ram_snapshot_and_every_paging_record(tmp_path):
    path = tmp_path / "journal.sqlite3"
    turns = [f"message number {n} " + "blah " * 20 for n in range(8)] + ["tell me about herons"]
    cid, pid = chat(path, turns)
    journal = Journal(path)
    info = journal.ram()  # the latest process by default
    journal.close()
    assert info["conversation"] == cid and info["pid"] == pid and info["name"] == "chat"
    ram = info["ram"]
    assert ram["budget"] == budget() and ram["tokens"] <= budget()
    kinds = [p["kind"] for p in ram["pages"]]
    assert kinds[0] == "boot" and ram["pages"][0]["pinned"] and kinds[-2:] == ["user", "answer"]
    assert "recalled" in kinds and "herons" in ram["pages"][-2]["preview"]
    out = [r for r in info["paging"] if r["direction"] == "out"]
    came_in = [r for r in info["paging"] if r["direction"] == "in"]
    assert out and out[0]["tokens_before"] > budget() >= out[0]["tokens_after"]
    assert out[0]["reason"] == "over the context budget"
    assert out[0]["summaries"][0].startswith("the user said: message number 0")
    assert came_in and came_in[0]["summaries"] == ["an old fact about herons"]
    assert all(r["created"].endswith("Z") for r in info["paging"])


def test_process_picks_one_and_unknown_ones_are_a_clear_error(tmp_path):
    path = tmp_path / "journal.sqlite3"
    first, _ = chat(path, ["hello there"])
    second, _ = chat(path, ["another conversation"])
    journal = Journal(path)
    try:
        rows = journal.processes()
        assert [r["conversation"] for r in rows[:2]] == [second, first]
        assert journal.ram()["conversation"] == second
        assert journal.ram(str(rows[1]["process"]))["conversation"] == first  # a process number
        assert journal.ram(first[:6])["conversation"] == first  # or a conversation prefix
        with pytest.raises(JournalError, match="no process 99999"):
            journal.ram("99999")
    finally:
        journal.close()
    empty = Journal(tmp_path / "empty.sqlite3")
    with pytest.raises(JournalError, match="no process has recorded its RAM yet"):
        empty.ram()
    empty.close()


def test_the_table_shows_kind_tokens_pinned_and_paging_with_when_and_why(tmp_path):
    path = tmp_path / "journal.sqlite3"
    chat(path, [f"message number {n} " + "blah " * 20 for n in range(8)])
    journal = Journal(path)
    info = journal.ram()
    journal.close()
    lines = format_ram(info)
    text = "\n".join(lines)
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["#", "kind", "tokens", "pinned"])
    boot = lines[header + 1].split()
    assert boot[:2] == ["0", "boot"] and int(boot[2]) == info["ram"]["pages"][0]["tokens"] and boot[3] == "yes"
    assert f"{info['ram']['tokens']} tokens of a {budget()}-token budget" in text
    assert "out to disk" in text and "over the context budget" in text
    stamp = info["paging"][0]["created"][:19].replace("T", " ")
    assert stamp in text


def llmos(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOS_DATA_DIR": str(data_dir), "LLMOS_CONFIG": str(data_dir / "none.toml")}
    return subprocess.run([sys.executable, "-m", "llmos.app.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_memory_ram_table_json_list_and_errors(tmp_path):
    cid, pid = chat(tmp_path / "journal.sqlite3", [f"message number {n} " + "blah " * 20 for n in range(6)])
    done = llmos(tmp_path, "memory", "ram")
    assert done.returncode == 0, done.stderr
    assert f"of conversation {cid[:8]}" in done.stdout and "boot" in done.stdout and "out to disk" in done.stdout
    done = llmos(tmp_path, "memory", "ram", "--json", "--process", cid[:8])
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["pid"] == pid and data["ram"]["pages"][0]["kind"] == "boot"
    assert {"kind", "tokens", "pinned"} <= set(data["ram"]["pages"][0])
    assert {r["direction"] for r in data["paging"]} == {"out"}
    listed = llmos(tmp_path, "memory", "ram", "--list")
    assert listed.returncode == 0 and cid[:8] in listed.stdout
    bad = llmos(tmp_path, "memory", "ram", "--process", "4242")
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "no process 4242" in bad.stderr


@pytest.mark.model
def test_real_model_ram_is_recorded_with_disk_paging(real_backend, tmp_path):
    from llmos.kernel.process import Message
    from llmos.kernel.prompt import render, render_message
    from llmos.kernel.turn import boot_messages
    from llmos.memory.pager import DiskPager

    from tests.kernels import started

    registry = DeviceRegistry.from_entry_points()
    registry.start(tmp_path)
    boot_tokens = len(real_backend.tokenize(render(boot_messages(registry))))
    fact = "My sister Inga lives in Bergen."
    fact_tokens = len(real_backend.tokenize(render_message(Message("user", fact))))
    # room for the first message and a few tokens of answer, not for a second turn: the first turn
    # is paged out by measured token counts, whatever length the model's answers have here
    budget = boot_tokens + fact_tokens + 8
    pager = DiskPager(tmp_path / "devices" / "memory" / "chroma")
    kernel = Kernel(real_backend, registry, TurnOptions(ram_tokens=budget, max_answer_tokens=30), pager=pager)
    path = tmp_path / "journal.sqlite3"
    journal = attach_journal(kernel, path)
    try:
        with started(kernel):
            pid = kernel.spawn("chat")
            for text in [fact, "I am learning to play the cello.", "The weather is grey today.",
                         "Where does my sister live?"]:
                kernel.submit(pid, text).result(300)
            live = kernel.ram(pid)
    finally:
        journal.close()
    journal = Journal(path)
    info = journal.ram()
    journal.close()
    ram = info["ram"]
    assert ram["tokens"] == live.tokens and ram["budget"] == budget
    assert [p["tokens"] for p in ram["pages"]] == [p.tokens for p in live.pages]
    assert ram["pages"][0]["kind"] == "boot" and ram["pages"][0]["tokens"] > 100
    out = [r for r in info["paging"] if r["direction"] == "out"]
    assert out and "Inga" in out[0]["summaries"][0]  # the first turn left for disk, and the journal says so
    came_in = [r for r in info["paging"] if r["direction"] == "in" and any("Inga" in t for t in r["summaries"])]
    assert came_in and came_in[-1]["created"] >= out[0]["created"]  # paged out, later paged back in
    recalled = [p for p in ram["pages"] if p["kind"] == "recalled"]
    assert recalled and RECALL_HEADER[:20] in recalled[0]["preview"]  # resident with the last turn
