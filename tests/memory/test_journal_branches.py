"""The journal's conversation tree (desktop shell): branch, family, rename, delete, search."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from llmos.kernel import events
from llmos.kernel.process import Message
from llmos.memory.journal import Journal


class Clock:
    """The journal's clock, one second later at every change: "latest" never rests on a race."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> str:
        self.now += timedelta(seconds=1)
        return self.now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _conversation(journal: Journal, cid: str, *texts: tuple[str, str]) -> str:
    for role, text in texts:
        journal.append(cid, Message(role, text))
    return cid


def test_a_branch_copies_the_first_messages_and_their_calls(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3", clock=Clock())
    assert "0003_conversation_branches" in [name for name, _ in journal.applied_migrations()]
    root = "a" * 32
    journal.observe(events.ProcessCreated(1, "chat", "chat", root))
    journal.append(root, Message("user", "What is 2+2?"), pid=1)
    journal.append(root, Message("assistant", '{"expression": "2+2"}', call="calculator.evaluate"), pid=1)
    journal.observe(events.SyscallFinished(1, 1, "calculator", "evaluate", {"expression": "2+2"}, "4", True, 0.01, True))
    journal.append(root, Message("tool", "4", call="calculator.evaluate"), pid=1)
    journal.append(root, Message("assistant", "4."), pid=1)
    journal.append(root, Message("user", "And 3+3?"), pid=1)
    branch = journal.branch(root, 4)
    assert [m.content for m in journal.messages(branch)] == [m.content for m in journal.messages(root)[:4]]
    assert [c["result"] for c in journal.syscalls(branch)] == ["4"]
    assert journal.parent(branch) == root and journal.parent(root) is None
    assert journal.family(branch) == [root, branch] and journal.root(branch) == root
    journal.append(branch, Message("user", "And 5+5?"))
    assert journal.latest_leaf(root) == branch
    assert journal.conversation(branch)["title"] == "What is 2+2?"


def test_trees_search_rename_and_delete_act_on_whole_trees(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3", clock=Clock())
    one = _conversation(journal, "1" * 32, ("user", "Tell me about whales"), ("assistant", "Big."))
    two = _conversation(journal, "2" * 32, ("user", "Capital of France?"), ("assistant", "Paris."))
    branch = journal.branch(one, 1)
    journal.append(branch, Message("assistant", "Blue whales are the largest animals."))
    trees = journal.trees()
    assert [t["id"] for t in trees] == [one, two]  # the branch made the whale tree the latest
    assert trees[0]["branches"] == 2 and trees[1]["branches"] == 1
    assert [t["id"] for t in journal.trees("LARGEST")] == [one]  # a message of a branch matches
    assert [t["id"] for t in journal.trees("capital")] == [two]
    journal.rename(branch, "Whales")
    assert journal.conversation(one)["title"] == journal.conversation(branch)["title"] == "Whales"
    assert journal.delete(one) == 2
    assert [t["id"] for t in journal.trees()] == [two]
    assert [c["id"] for c in journal.conversations(None, include_empty=True)] == [two]
