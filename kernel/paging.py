"""The context window as RAM: a token budget, pinned pages, eviction of whole turns, page-in.

A process's messages are its pages. The first ``Process.pinned`` messages (the boot prompt and
its example turns) never leave. The rest is a sliding window of turns; a turn is a user message
and everything that answers it (calls, results, the answer), so a call and its result always
leave together. When the rendered conversation exceeds the budget, the oldest turns are evicted
and handed to the pager, which writes them to disk. Before each user turn the pager may page in
what it finds relevant, as a marked "recalled memory" message.

The kernel only knows the :class:`Pager` Protocol; the disk behind it lives in ``memory/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .process import Message

RECALL_HEADER = "Recalled from long-term memory (earlier conversations; may be out of date):"


@runtime_checkable
class Pager(Protocol):
    def page_out(self, conversation: str, turns: list[list[Message]]) -> list[str]:
        """Write evicted turns to disk; returns one short summary per turn."""

    def page_in(self, conversation: str, query: str, budget_chars: int) -> list[str]:
        """Texts from disk relevant to ``query``, most relevant first, within ``budget_chars``."""


@dataclass(frozen=True)
class Eviction:
    turns: list[list[Message]]
    tokens_before: int
    tokens_after: int


def turns_of(messages: list[Message]) -> list[list[Message]]:
    """Split unpinned messages into turns: each starts at a user message."""
    turns: list[list[Message]] = []
    for message in messages:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
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


def recall_message(texts: list[str]) -> Message:
    lines = "\n".join(f"- {text}" for text in texts)
    return Message("system", f"{RECALL_HEADER}\n{lines}")
