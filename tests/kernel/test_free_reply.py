"""Reading a freely written reply as it streams (kernel/syscalls/protocol.py: FreeReply)."""

from __future__ import annotations

import pytest

from llmos.kernel.syscalls.protocol import FreeReply, ParsedCall, parse_reply


def _read(*pieces: str) -> tuple[FreeReply, str]:
    reader = FreeReply()
    shown = "".join(reader.feed(p) for p in pieces) + reader.flush()
    return reader, shown


@pytest.mark.parametrize("pieces, shown", [
    (("ANSWER:", " Hello", " there."), "Hello there."),
    (("  ANS", "WER: 42", " it is"), "42 it is"),
    (("CA", "LLING all", " cars"), "CALLING all cars"),  # a word, not a call
    (("Hi",), "Hi"),  # too short to decide until the end
    (("ANSWER:",), ""),
    (("ANSWER:", "\n", " x y"), "x y"),  # the space after the prefix came in later pieces
    (("The answer", " is 7."), "The answer is 7."),  # no prefix at all
])
def test_an_answer_is_passed_on_without_its_prefix(pieces, shown):
    reader, text = _read(*pieces)
    assert text == shown and not reader.calling


def test_a_call_is_held_back_whole_and_parsed_at_the_end():
    pieces = ("CALL", " calculator", ".evaluate", ' {"expression": "6 * 7"}')
    reader, shown = _read(*pieces)
    assert reader.calling and shown == ""
    assert parse_reply("".join(pieces)) == ParsedCall("calculator.evaluate", {"expression": "6 * 7"}, None)
