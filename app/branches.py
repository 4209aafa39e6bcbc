"""The conversation tree as the chat view shows it: where the current branch could go another way.

The journal keeps each branch as a whole conversation (a copy of its parent's first messages,
then its own). Two branches part at the first message where they differ; :func:`variants` finds,
for each message of the current branch, the other ways the tree went from there. Plain Python,
no Qt, so it is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmos.kernel.process import Message


@dataclass(frozen=True)
class Variant:
    """At message ``index`` the tree has ``total`` versions; the current branch shows ``position``
    (1-based). ``targets[i]`` is the conversation to open to see version ``i + 1``."""

    index: int
    position: int
    total: int
    targets: tuple[str, ...]

    @property
    def previous(self) -> str | None:
        return self.targets[self.position - 2] if self.position > 1 else None

    @property
    def next(self) -> str | None:
        return self.targets[self.position] if self.position < self.total else None


def _key(message: Message) -> tuple[str, str, str | None]:
    return message.role, message.content, message.call


def variants(current: str, family: dict[str, list[Message]], order: list[str] | None = None) -> dict[int, Variant]:
    """``family``: every branch of the tree (id -> messages), ``order``: their ids oldest first
    (default: the dict's order). Returns the message indexes of ``current`` where the tree forks."""
    order = order or list(family)
    mine = family[current]
    matching = [cid for cid in order if cid != current]
    out: dict[int, Variant] = {}
    for index, message in enumerate(mine):
        groups: dict[tuple[str, str, str | None], str] = {}
        for cid in matching:
            other = family[cid]
            if len(other) > index:
                groups[_key(other[index])] = cid  # the newest branch of each version wins
        if groups and set(groups) != {_key(message)}:
            keys = list(dict.fromkeys([*groups, _key(message)]))
            keys.sort(key=lambda k: _first_seen(k, index, order, family, current))
            targets = tuple(current if k == _key(message) else groups[k] for k in keys)
            out[index] = Variant(index, keys.index(_key(message)) + 1, len(keys), targets)
        matching = [cid for cid in matching if len(family[cid]) > index and _key(family[cid][index]) == _key(message)]
        if not matching:
            break
    return out


def _first_seen(key: tuple[str, str, str | None], index: int, order: list[str],
                family: dict[str, list[Message]], current: str) -> int:
    """Versions are numbered in the order they were first written (the branch's age)."""
    for rank, cid in enumerate(order):
        messages = family[cid]
        if len(messages) > index and _key(messages[index]) == key:
            return rank
    return len(order)


def turn_start(messages: list[Message], user_index: int) -> int:
    """How many messages a branch keeps to redo the turn of the user message at ``user_index``:
    everything before it, less the recalled memory paged in for it (it is paged in again)."""
    keep = user_index
    while keep > 0 and messages[keep - 1].role == "system":
        keep -= 1
    return keep


def last_user_index(messages: list[Message]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return None
