"""The system-call protocol: how the model asks for a device, and how we read what it wrote.

An assistant turn is either ``CALL <device.call> <JSON arguments>`` or ``ANSWER: <text>``.
Deciding *whether* to call and *what* to call are separate steps (see :mod:`.decide`): the
arguments are generated under a grammar built from the call's JSON schema, then validated again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..devices import Call
from ..process import Message
from .grammar import bounded_schema

# Conversations that show the model when not to call. Each device adds its own examples.
# As many of these as there are calls keeps the model from calling out of habit.
ANSWER_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Hi there!", "Hello! How can I help you today?"),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
    ("Write a limerick about a cat.", "There once was a cat named Lou, who napped in a comfortable shoe..."),
    ("Give me two tips for staying focused.", "1. Put your phone away. 2. Work in short blocks with breaks."),
    ("Good night!", "Good night! Sleep well."),
)

# Content-free requests: what the model would do with no request at all is subtracted from its
# scores ("contextual calibration"), so a device the examples make likely is not called by habit.
NULL_REQUESTS: tuple[str, ...] = ("N/A", "", "[MASK]")


def example_messages(calls: list[tuple[str, Call]]) -> list[Message]:
    """Few-shot turns: the answer examples interleaved with one example per device.

    One per device (its first call that has an example), not one per call: a device with many
    calls would otherwise crowd the prompt with calls and teach the model to call by habit.
    """
    calling: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for name, call in calls:
        device = name.partition(".")[0]
        if call.examples and device not in seen:
            seen.add(device)
            calling.append((name, call.examples[0]))
    answers = list(ANSWER_EXAMPLES)
    messages: list[Message] = []
    while calling or answers:
        if answers:
            request, reply = answers.pop(0)
            messages += [Message("user", request), Message("assistant", reply)]
        if calling:
            name, example = calling.pop(0)
            messages += [
                Message("user", example.request),
                Message("assistant", json.dumps(example.arguments, ensure_ascii=False), call=name),
            ]
    return messages


def grammar_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """The call's schema made safe for grammar-constrained generation (:func:`.grammar.bounded_schema`:
    strings and arrays bounded, what llama.cpp cannot take left to validation); GrammarError if none."""
    return bounded_schema(parameters)


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: Any
    error: str | None = None


_CALL_RE = re.compile(r"^\s*CALL\s+([A-Za-z_][\w.]*)\s*(.*)$", re.DOTALL)


def parse_arguments(text: str) -> tuple[Any, str | None]:
    """JSON arguments as written by the model; (None, reason) when they are not JSON."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    if not text:
        return {}, None
    try:
        value, end = json.JSONDecoder(strict=False).raw_decode(text)
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON ({exc.msg} at character {exc.pos})"
    return value, None


_CALL_START = re.compile(r"CALL\s")


class FreeReply:
    """A freely written reply (a backend that cannot score), read as it streams: a ``CALL <name>
    {...}`` line is held back whole (``calling``: read it with :func:`parse_reply` at the end), and
    an answer (``ANSWER: ...``, or plain text) is passed on piece by piece without its prefix, so
    a remote model's answer streams like a local one's."""

    def __init__(self) -> None:
        self._head = ""  # the opening, until it tells a call from an answer
        self.calling = False
        self.answering = False
        self._started = False  # the answer has shown a character that is not a space

    def feed(self, piece: str) -> str:
        """The part of ``piece`` to show now ("" while undecided, and for a call)."""
        if self.answering:
            if not self._started:  # whitespace after "ANSWER:" that came in a later piece
                piece = piece.lstrip()
                self._started = bool(piece)
            return piece
        if self.calling:
            return ""
        self._head += piece
        head = self._head.lstrip()
        if _CALL_START.match(head):
            self.calling = True
            return ""
        if "CALL ".startswith(head) or "ANSWER:".startswith(head):
            return ""  # "", "CA", "ANSW", "ANSWER:": could still be either
        return self._open(head)

    def flush(self) -> str:
        """At the end of the stream: what an opening too short to decide on still holds."""
        return "" if self.answering or self.calling else self._open(self._head.lstrip())

    def _open(self, head: str) -> str:
        self.answering = True
        text = head.removeprefix("ANSWER:").lstrip()
        self._started = bool(text)
        return text


def parse_reply(text: str) -> ParsedCall | str:
    """Free text from the model -> a ParsedCall, or the answer text."""
    match = _CALL_RE.match(text)
    if match:
        arguments, error = parse_arguments(match.group(2))
        return ParsedCall(match.group(1), arguments, error)
    answer = text.strip()
    return answer.removeprefix("ANSWER:").strip()
