"""Catching answers that present a device result the turn did not produce.

A small model copies its own earlier answers: after one real ``memory.remember``, it answered
nine more "remember" requests with the first call's result, "Remembered (id 648800002c42): ...",
the same id each time, and nothing was stored (issue 13). The kernel knows which calls ran in
the turn, so such an answer can be caught before it is shown as fact.

An answer *claims* a call's result when, and that call did not run in this turn (a call that
failed did not run):

- it contains the literal start of a result that call produced earlier in the conversation
  ("Remembered (id"): the result's leading words up to its first word with a digit, at least
  ``MIN_PREFIX`` characters;
- it contains an id-shaped token (hex with letters and digits, 8 or more) that an earlier result
  of that call holds and no result of this turn does;
- it says, in the first person or as its first word, that it did the call's action: the verb of
  the call's name or of its description's first word, in the past ("remembered", "stored") or
  promised ("I'll remember");
- it writes the protocol's call line itself ("CALL python.run {...}") as the answer.

Also an id-shaped token that no result of this turn holds, and the request does not, is a claim
(of no known call): ids are made by devices, never by the model.

And when the turn's last call failed (and no call of it succeeded), a number the turn's
messages do not hold (the request, the calls' arguments, the results and error pages) is a claim
of that call's result: a calculator that refused "12 squared" gave no number, so a number in the
answer is the model's own guess presented as the result. An answer may say what failed.

The kernel then makes the claimed call (``kernel/turn.py``), or, when it cannot, replaces the
claim with a line saying it did not happen (:func:`not_done`). :class:`Gate` holds back the last
few characters of a streaming answer, so a claim is caught before any of it is shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..process import Message
from .dispatch import ERROR_PREFIX

MIN_PREFIX = 8  # characters of a result's literal start that count as a copy of its format
HOLD_CHARS = 24  # a streaming answer's tail held back until it cannot be the start of a claim
WINDOW_CHARS = 64  # how far before the shown text a streaming check looks again

_ID = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.IGNORECASE)
# A number as written in an answer: 50,400 or 3.14 (not the 2 of "2nd" or of an id)
_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,]|\.\d)|(?<![\w.,])\d+(?:\.\d+)?(?![\w,]|\.\d)")
_NEGATION = re.compile(r"\b(not|n't|never|no|cannot|can't|didn't|won't|unable)\W+(\w+\W+){0,2}$", re.IGNORECASE)


@dataclass(frozen=True)
class Claim:
    call: str | None  # the call whose result the answer presents (None: an id no device made)
    start: int  # where in the answer the claim starts
    evidence: str  # the text that presents it
    failed: str = ""  # the error page of the call, when the call ran and failed


@dataclass(frozen=True)
class Produced:
    """A result a device produced: which call, and its text."""

    call: str
    text: str

    @property
    def failed(self) -> bool:
        return self.text.startswith(ERROR_PREFIX)


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


def _number(text: str) -> str:
    """A number's digits as compared: no thousands separators, no trailing decimal zeros."""
    digits = text.replace(",", "")
    return digits.rstrip("0").rstrip(".") if "." in digits else digits


def numbers_in(text: str) -> set[str]:
    return {_number(m.group()) for m in _NUMBER.finditer(text)}


class ClaimCheck:
    """The claim check of one turn, built once: ``check(answer, since, complete)`` is the first
    claim in ``answer`` (scanning from ``since``) of a result no call of this turn produced, or
    None. ``complete=False``: ``answer`` is the start of a streaming answer (its last number may
    go on).

    ``this_turn``/``earlier``: results produced in this turn and before it; ``calls``: every call
    the kernel can make, with its description; ``turn_text``: the text of this turn's messages
    (request, calls, results), whose numbers an answer may repeat after a failed call.
    """

    def __init__(self, request: str, this_turn: list[Produced], earlier: list[Produced],
                 calls: dict[str, str], turn_text: str = "") -> None:
        ran = {p.call for p in this_turn if not p.failed}
        # the turn's last result, when it is a failure of a call that never ran: (call, its error page)
        last = this_turn[-1] if this_turn else None
        self.failure = (last.call, last.text) if last is not None and last.failed and last.call not in ran else None
        self.known_numbers = numbers_in(f"{request}\n{turn_text}\n" + "\n".join(p.text for p in this_turn))
        self.request = request.lower()
        self.produced_now = " ".join(p.text for p in this_turn).lower()
        self.prefixes = [(p.call, prefix.lower()) for p in earlier if p.call not in ran
                         for prefix in [result_prefix(p.text)] if prefix]
        self.ids = [(p.call, token.lower()) for p in earlier if p.call not in ran
                    for token in _ID.findall(p.text) if token.lower() not in self.produced_now]
        self.said = []
        for call, description in calls.items():
            if call in ran:
                continue
            # the protocol's own call line, written as the answer: shown, it reads as a call made
            self.said.append((call, re.compile(rf"()(\bCALL\s+{re.escape(call)})\b()")))
            for verb in action_verbs(call, description):
                self.said.append((call, re.compile(
                    rf"(^|[.!?]\s+|\bI(?:'ve| have)?\s+|\bhas been\s+|\bhave been\s+)({re.escape(_past(verb))})\b"
                    rf"|\bI(?:'ll| will| shall)\s+({re.escape(verb)})\b", re.IGNORECASE)))

    def __call__(self, answer: str, since: int = 0, complete: bool = True) -> Claim | None:
        found: list[Claim] = []
        for match in _NUMBER.finditer(answer, since) if self.failure is not None else ():
            if not complete and answer[match.end():] in ("", ".", ","):
                break  # "14" may be the start of "144", "3." of "3.14"
            if _number(match.group()) not in self.known_numbers:
                found.append(Claim(self.failure[0], match.start(), match.group(), failed=self.failure[1]))
                break
        lowered = answer.lower()
        for call, prefix in self.prefixes:
            at = lowered.find(prefix, since)
            if at >= 0 and _affirmed(answer, at):
                found.append(Claim(call, at, answer[at:at + len(prefix)]))
        for call, token in self.ids:
            at = lowered.find(token, since)
            if at >= 0:
                found.append(Claim(call, at, token))
        for call, pattern in self.said:
            for match in pattern.finditer(answer, since):
                at = match.start(2) if match.group(2) else match.start(3)
                if _affirmed(answer, match.start()):
                    found.append(Claim(call, at, match.group(0).strip()))
        for match in _ID.finditer(answer, since):
            token = match.group(0).lower()
            if token not in self.produced_now and token not in self.request:
                found.append(Claim(None, match.start(), match.group(0)))
        return min(found, key=lambda c: (c.start, c.call is None)) if found else None


def find_claim(answer: str, request: str, this_turn: list[Produced], earlier: list[Produced],
               calls: dict[str, str]) -> Claim | None:
    """The first claim in ``answer`` (see :class:`ClaimCheck`), or None."""
    return ClaimCheck(request, this_turn, earlier, calls)(answer)


FAILED_CHARS = 160  # how much of a failed call's error the line shown instead of a claim repeats


def not_done(claim: Claim) -> str:
    """The line shown instead of a claim the kernel could not back with a call."""
    if claim.failed:
        error = claim.failed.removeprefix(ERROR_PREFIX)
        error = error if len(error) <= FAILED_CHARS else error[:FAILED_CHARS - 3] + "..."
        return f"(Not done: {claim.call} failed ({error}), so there is no result of it to show.)"
    what = f"{claim.call} did not run in this turn" if claim.call else "no device produced that result"
    return f"(Not done: {what}, so there is no result of it to show.)"


class Gate:
    """Holds back a streaming answer's pieces until the last ``HOLD_CHARS`` characters after them
    have come, so none can be the start of a claim; ``check`` runs on the text at every piece.

    ``feed(piece)`` returns the pieces that may be shown now (possibly none, each as it came), or
    None once a claim was found (``claim`` is then set, and nothing from its start was shown)."""

    def __init__(self, check: Callable[[str, int, bool], Claim | None], hold: int = HOLD_CHARS) -> None:
        self._check = check
        self.hold = hold
        self.text = ""
        self.shown = 0  # characters released
        self._pending: list[str] = []
        self.claim: Claim | None = None

    def _look(self, complete: bool = False) -> Claim | None:
        # A claim is short: one that started before what was shown less WINDOW_CHARS was already seen.
        self.claim = self.claim or self._check(self.text, max(0, self.shown - WINDOW_CHARS), complete)
        return self.claim

    def feed(self, piece: str) -> list[str] | None:
        if self.claim is not None:
            return None
        self.text += piece
        self._pending.append(piece)
        if self._look() is not None:
            return None
        out: list[str] = []
        while self._pending and self.shown + len(self._pending[0]) <= len(self.text) - self.hold:
            out.append(self._pending.pop(0))
            self.shown += len(out[-1])
        return out

    def flush(self) -> list[str] | None:
        """At the end of the answer: the pieces left, or None when the text holds a claim."""
        if self._look(complete=True) is not None:
            return None
        out, self._pending, self.shown = self._pending, [], len(self.text)
        return out

    @property
    def safe(self) -> str:
        """The answer up to the claim (what may be kept), or all of it."""
        return self.text[: self.claim.start] if self.claim is not None else self.text
