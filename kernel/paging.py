"""The context window as RAM: a token budget, pinned pages, eviction of whole turns, page-in.

A process's messages are its pages. The first ``Process.pinned`` messages (the boot prompt and
its example turns) never leave. The rest is a sliding window of turns; a turn is a user message
and everything that answers it (calls, results, the answer), so a call and its result always
leave together. When the rendered conversation exceeds the budget, the oldest turns are evicted
and handed to the pager, which writes them to disk. Before each user turn the pager may page in
what it finds relevant, as a marked "recalled memory" message; passages of the user's documents
come in as an untrusted ``memory.recall`` result naming their file (outside data, never
instructions: the process is tainted as after any untrusted result).

The kernel only knows the :class:`Pager` Protocol; the disk behind it lives in ``memory/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from .process import Message

RECALL_HEADER = "Recalled from long-term memory (earlier conversations; may be out of date):"
RECALL_CALL = "memory.recall"  # the call a paged-in untrusted passage is shown as the result of
GROUNDED_SHARE = 0.5  # of the words an answer adds, the share the passages must hold (see grounded)


@runtime_checkable
class Pager(Protocol):
    def page_out(self, conversation: str, turns: list[list[Message]]) -> list[str]:
        """Write evicted turns to disk; returns one short summary per turn."""

    def page_in(self, conversation: str, query: str, budget_chars: int) -> list[Any]:
        """Texts from disk relevant to ``query``, most relevant first, within ``budget_chars``.

        A ``str`` is the OS's own memory (a remembered fact, an evicted turn's summary); an
        :class:`~llmos.kernel.devices.Untrusted` is outside text (an ingested document): it is
        shown as an untrusted ``memory.recall`` result and taints the process."""


@dataclass(frozen=True)
class Eviction:
    turns: list[list[Message]]
    tokens_before: int
    tokens_after: int


def is_paged_in(message: Message, previous: Message | None) -> bool:
    """A page brought in before a user turn (recalled memory, or a document passage shown as a
    ``memory.recall`` result that no call asked for)."""
    if message.role == "system":
        return message.content.startswith(RECALL_HEADER)
    called = previous is not None and previous.role == "assistant" and previous.call is not None
    return message.role == "tool" and message.call == RECALL_CALL and not called


def turns_of(messages: list[Message]) -> list[list[Message]]:
    """Split unpinned messages into turns: each starts at a user message, or at the pages brought
    in for it just before (so they stay and leave with their turn)."""
    turns: list[list[Message]] = []
    opened_by_page_in = False
    previous: Message | None = None
    for message in messages:
        if is_paged_in(message, previous):
            if not opened_by_page_in:
                turns.append([])
                opened_by_page_in = True
            turns[-1].append(message)
        elif message.role == "user" and opened_by_page_in:
            turns[-1].append(message)
            opened_by_page_in = False
        elif message.role == "user" or not turns:
            turns.append([message])
            opened_by_page_in = False
        else:
            turns[-1].append(message)
            opened_by_page_in = False
        previous = message
    return turns


def fit(messages: list[Message], pinned: int, budget: int, count: Callable[[list[Message]], int],
        keep_last: int = 1) -> tuple[list[Message], Eviction | None]:
    """Evict the oldest whole turns until ``count(messages) <= budget`` (the last ``keep_last``
    turns always stay: the current one is being answered). Returns the new list and what left."""
    before = count(messages)
    if before <= budget:
        return messages, None
    head, turns = messages[:pinned], turns_of(messages[pinned:])
    evicted: list[list[Message]] = []
    while len(turns) > keep_last and count([*head, *(m for t in turns for m in t)]) > budget:
        evicted.append(turns.pop(0))
    kept = [*head, *(m for t in turns for m in t)]
    return kept, (Eviction(evicted, before, count(kept)) if evicted else None)


_WORD = re.compile(r"[^\W_]+")


def _telling_words(text: str) -> set[str]:
    """Words that carry content: four letters or more, or with a digit (a plural's s dropped)."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if len(word) >= 4 or any(c.isdigit() for c in word):
            words.add(word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word)
    return words


def grounded(answer: str, question: str, passages: list[str], share: float = GROUNDED_SHARE) -> bool:
    """Do the passages bear the answer out: of the telling words the answer adds to the question,
    are at least ``share`` found in them? (An answer that says it is not there is grounded.)"""
    if "not in your documents" in answer.lower():
        return True
    added = _telling_words(answer) - _telling_words(question)
    if not added:
        return True
    held = _telling_words(" ".join(passages))
    return len(added & held) >= share * len(added)


_FROM = re.compile(r"From the file (.+?)(?: \[(.+?)\])?: ")


def citation(answer: str, question: str, passages: list[str]) -> str:
    """``[file, section]`` of the passage that holds most of what the answer adds to the question
    (the best ranked on a tie), or "" when the answer names a passage's file already."""
    best, best_held = "", -1
    added = _telling_words(answer) - _telling_words(question)
    for text in passages:
        found = _FROM.match(text)
        if found is None:
            continue
        name, section = found.group(1), found.group(2)
        if name.lower() in answer.lower():
            return ""
        held = len(added & _telling_words(text))
        if held > best_held:
            best, best_held = f"[{name}, {section}]" if section else f"[{name}]", held
    return best


def recall_message(texts: list[str]) -> Message:
    lines = "\n".join(f"- {text}" for text in texts)
    return Message("system", f"{RECALL_HEADER}\n{lines}")


# --- what is in RAM: the inspector's view of a process's context window ----------------------


@dataclass(frozen=True)
class Page:
    """One message of a process's context window, as the RAM inspector shows it."""

    index: int
    kind: str  # boot, example, recalled, user, call, result, answer, system
    role: str
    tokens: int
    pinned: bool
    call: str | None
    trusted: bool
    preview: str


class PageDirection(StrEnum):
    OUT = "out"  # left the context window, written to disk (summarised)
    IN = "in"  # came back, recalled for a request


@dataclass(frozen=True)
class PagingRecord:
    """Pages that left the context window (``out``, written to disk) or came back (``in``)."""

    direction: PageDirection
    reason: str
    messages: int
    tokens_before: int = 0
    tokens_after: int = 0
    summaries: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)  # wall-clock seconds since the epoch


@dataclass(frozen=True)
class RamReport:
    """A snapshot of one process's RAM: resident pages, the budget, and what was paged and why."""

    pid: int
    conversation: str
    n_ctx: int
    budget: int
    tokens: int  # the rendered context, counted with the model's tokenizer
    pages: tuple[Page, ...]
    paging: tuple[PagingRecord, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def page_kind(message: Message, index: int, pinned: int) -> str:
    if index < pinned:
        return "boot" if index == 0 else "example"
    if message.role == "system":
        return "recalled" if message.content.startswith(RECALL_HEADER) else "system"
    if message.role == "assistant":
        return "call" if message.call else "answer"
    return "result" if message.role == "tool" else message.role


def _preview(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def pages_of(messages: list[Message], pinned: int, count: Callable[[Message], int]) -> tuple[Page, ...]:
    return tuple(
        Page(i, page_kind(m, i, pinned), m.role, count(m), i < pinned, m.call, m.trusted, _preview(m.content))
        for i, m in enumerate(messages)
    )
