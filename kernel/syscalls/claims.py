"""Catching answers that present a device result the turn did not produce.

A small model copies its own earlier answers: after one real ``memory.remember``, it answered
nine more "remember" requests with the first call's result, "Remembered (id 648800002c42): ...",
the same id each time, and nothing was stored (issue 13). The kernel knows which calls ran in
the turn, so such an answer can be caught before it is shown as fact.

An answer *claims* a call's result when, and that call did not run in this turn:

- it contains the literal start of a result that call produced earlier in the conversation
  ("Remembered (id"): the result's leading words up to its first word with a digit, at least
  ``MIN_PREFIX`` characters;
- it contains an id-shaped token (hex with letters and digits, 8 or more) that an earlier result
  of that call holds and no result of this turn does;
- it says, in the first person or as its first word, that it did the call's action: the verb of
  the call's name or of its description's first word, in the past ("remembered", "stored") or
  promised ("I'll remember").

Also an id-shaped token that no result of this turn holds, and the request does not, is a claim
(of no known call): ids are made by devices, never by the model.

The kernel then makes the claimed call (``kernel/turn.py``), or, when it cannot, replaces the
claim with a line saying it did not happen (:func:`not_done`). :class:`Gate` holds back the last
few characters of a streaming answer, so a claim is caught before any of it is shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..process import Message

MIN_PREFIX = 8  # characters of a result's literal start that count as a copy of its format
HOLD_CHARS = 24  # a streaming answer's tail held back until it cannot be the start of a claim

_ID = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(not|n't|never|no|cannot|can't|didn't|won't|unable)\W+(\w+\W+){0,2}$", re.IGNORECASE)


@dataclass(frozen=True)
class Claim:
    call: str | None  # the call whose result the answer presents (None: an id no device made)
    start: int  # where in the answer the claim starts
    evidence: str  # the text that presents it


@dataclass(frozen=True)
class Produced:
    """A result a device produced: which call, and its text."""

    call: str
    text: str


def results_of(messages: Iterable[Message]) -> list[Produced]:
    """The device results among ``messages``: tool messages that answer a call before them."""
    produced: list[Produced] = []
    previous: Message | None = None
    for message in messages:
        if message.role == "tool" and previous is not None and previous.role == "assistant" and previous.call:
            produced.append(Produced(message.call or previous.call, message.content))
        previous = message
    return produced


def result_prefix(text: str) -> str:
    """The literal start of a result, up to its first word with a digit (where its values begin)."""
    words = []
    for word in (text.strip().splitlines() or [""])[0].split():
        if re.search(r"\d", word):
            break
        words.append(word)
    head = " ".join(words).rstrip(" (:#-")
    return head if len(head) >= MIN_PREFIX and re.search(r"[A-Za-z]{3}", head) else ""


def _past(verb: str) -> str:
    verb = verb.lower()
    if verb.endswith("e"):
        return verb + "d"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ied"
    return verb + "ed"


def action_verbs(call: str, description: str = "") -> set[str]:
    """The verbs that name a call's action: its name's, and its description's first word's."""
    verbs = {call.partition(".")[2].lower()}
    first = re.match(r"\s*([A-Za-z]+)", description or "")
    if first:
        verbs.add(first.group(1).lower())
    return {v for v in verbs if len(v) >= 4}


def _affirmed(text: str, start: int) -> bool:
    """Is the claim starting at ``start`` said, rather than denied ("I have not remembered")?"""
    return not _NEGATION.search(text[max(0, start - 40):start])


def find_claim(
    answer: str,
    request: str,
    this_turn: list[Produced],
    earlier: list[Produced],
    calls: dict[str, str],
) -> Claim | None:
    """The first claim in ``answer`` of a result no call of this turn produced, or None.

    ``this_turn``/``earlier``: results produced in this turn and before it; ``calls``: every call
    the kernel can make, with its description.
    """
    ran = {p.call for p in this_turn}
    produced_now = " ".join(p.text for p in this_turn).lower()
    found: list[Claim] = []
    lowered = answer.lower()
    for p in earlier:
        if p.call in ran:
            continue
        prefix = result_prefix(p.text)
        at = lowered.find(prefix.lower()) if prefix else -1
        if at >= 0 and _affirmed(answer, at):
            found.append(Claim(p.call, at, answer[at:at + len(prefix)]))
        for token in _ID.findall(p.text):
            at = lowered.find(token.lower())
            if at >= 0 and token.lower() not in produced_now:
                found.append(Claim(p.call, at, token))
    for call, description in calls.items():
        if call in ran:
            continue
        for verb in action_verbs(call, description):
            pattern = (rf"(^|[.!?]\s+|\bI(?:'ve| have)?\s+|\bhas been\s+|\bhave been\s+)({re.escape(_past(verb))})\b"
                       rf"|\bI(?:'ll| will| shall)\s+({re.escape(verb)})\b")
            for match in re.finditer(pattern, answer, re.IGNORECASE):
                at = match.start(2) if match.group(2) else match.start(3)
                if _affirmed(answer, match.start()):
                    found.append(Claim(call, at, match.group(0).strip()))
    for match in _ID.finditer(answer):
        token = match.group(0).lower()
        if token not in produced_now and token not in request.lower():
            found.append(Claim(None, match.start(), match.group(0)))
    return min(found, key=lambda c: (c.start, c.call is None)) if found else None


def not_done(claim: Claim) -> str:
    """The line shown instead of a claim the kernel could not back with a call."""
    what = f"{claim.call} did not run in this turn" if claim.call else "no device produced that result"
    return f"(Not done: {what}, so there is no result of it to show.)"


class Gate:
    """Holds back a streaming answer's last ``HOLD_CHARS`` characters until they cannot start a
    claim; ``check`` is called on the whole text so far at every piece.

    ``feed(piece)`` returns the text that may be shown now (possibly empty), or None once a claim
    was found (``claim`` is then set, and nothing from the claim's start has been shown)."""

    def __init__(self, check, hold: int = HOLD_CHARS) -> None:
        self._check = check
        self.hold = hold
        self.text = ""
        self.shown = 0
        self.claim: Claim | None = None

    def feed(self, piece: str) -> str | None:
        if self.claim is not None:
            return None
        self.text += piece
        self.claim = self._check(self.text)
        if self.claim is not None:
            return None
        upto = max(self.shown, len(self.text) - self.hold)
        out, self.shown = self.text[self.shown:upto], upto
        return out

    def flush(self) -> str | None:
        """At the end of the answer: the rest, or None when the whole text holds a claim."""
        if self.claim is None:
            self.claim = self._check(self.text)
        if self.claim is not None:
            return None
        out, self.shown = self.text[self.shown:], len(self.text)
        return out

    @property
    def safe(self) -> str:
        """The answer up to the claim (what may be kept), or all of it."""
        return self.text[: self.claim.start] if self.claim is not None else self.text
