"""Information flow: where the data in a device call's arguments came from.

A process's conversation is a list of labelled texts (:class:`Provenance`):

- ``USER``: the user's own words;
- ``TRUSTED``: results of trusted devices (the calculator, the clock);
- ``UNTRUSTED``: content from outside (web pages, MCP results, ingested documents, memories
  stored after untrusted content), each with its source;
- ``PRIVATE``: the user's private data (memories, recalled journal pages);
- ``KERNEL``: the pinned boot prompt and examples (public text).

The model's own messages carry no label of their own: what it writes is derived from all of them.

The rule (after a process has read untrusted content, for a call of a device that holds the
``network`` permission): every word of the call's arguments that would leave must be one the
untrusted content itself contains (or the kernel's public text). A link that is on the page,
whole or word for word, passes; ``http://same.host/log?d=<a secret from the conversation>`` does
not, because the secret is not on the page: that call needs the user's consent, and the question
says which words would leave, where they came from and where they would go. A URL the user typed
is the user's own request and passes too, and its place does not count as a new destination.

Words are compared case-insensitively, as whole words (runs of letters and digits); a word of 6
characters or more also passes when the untrusted text contains it inside a longer word. This
catches data copied, re-encoded (base64, hex) or reworded into a URL. It cannot catch data spelt
out through words the page happens to contain (one digit per query parameter): see
docs/security.md.
"""

from __future__ import annotations

import functools
import html
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .process import Message

__all__ = ["Label", "Labelled", "Leak", "Provenance", "argument_words", "describe_leaks", "leaks", "words_of",
           "typed_destinations"]

PRIVATE_DEVICES = ("memory.",)  # trusted results of these devices are the user's private data


class Label(Enum):
    USER = "your messages"
    TRUSTED = "a device result"
    UNTRUSTED = "untrusted content"
    PRIVATE = "your private data (memory, the journal)"
    KERNEL = "llmos's own prompt"


@dataclass(frozen=True)
class Labelled:
    label: Label
    text: str
    source: str = ""

    @functools.cached_property
    def words(self) -> set[str]:
        """The text's words, casefolded (split once, however many arguments are checked)."""
        return words_of(self.text)

    @functools.cached_property
    def plain(self) -> str:
        """The text unescaped and casefolded, for substring tests."""
        return html.unescape(self.text).casefold()


_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_URL_IN_TEXT = re.compile(r"""https?://[^\s"'<>\\]+""", re.IGNORECASE)
SUBSTRING_MIN = 6  # a word this long also passes inside a longer word of the untrusted text


def words_of(text: str) -> set[str]:
    """The words of ``text``, casefolded (what the flow rule compares)."""
    return {w.casefold() for w in _WORD.findall(text)}


def _source_of(message: Message) -> str:
    """A tool message's source: the call, and the address it read when its result names one."""
    source = message.call or "a device"
    try:
        data = json.loads(message.content)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("url"), str):
        return f"{source} {data['url']}"
    return source


def label_of(message: Message, index: int, pinned: int) -> Labelled | None:
    if index < pinned:
        return Labelled(Label.KERNEL, message.content)
    if message.role == "user":
        return Labelled(Label.USER, message.content)
    if message.role == "system":  # memories paged in before a turn
        return Labelled(Label.PRIVATE, message.content, "memory")
    if message.role == "tool":
        if not message.trusted:
            return Labelled(Label.UNTRUSTED, message.content, _source_of(message))
        call = message.call or ""
        if call.startswith(PRIVATE_DEVICES):
            return Labelled(Label.PRIVATE, message.content, call)
        return Labelled(Label.TRUSTED, message.content, call)
    return None  # the model's own messages


@dataclass
class Provenance:
    """The labelled texts of a conversation, and what its untrusted content contains."""

    texts: list[Labelled] = field(default_factory=list)

    def __post_init__(self) -> None:
        public = [t for t in self.texts if t.label in (Label.UNTRUSTED, Label.KERNEL)]
        self._public_text = "\n".join(html.unescape(t.text) for t in public).casefold()
        self._public_words = words_of(self._public_text)

    @classmethod
    def of(cls, messages: Iterable[Message], pinned: int = 0) -> "Provenance":
        found = (label_of(m, i, pinned) for i, m in enumerate(messages))
        return cls([t for t in found if t is not None])

    @property
    def tainted(self) -> bool:
        return any(t.label is Label.UNTRUSTED for t in self.texts)

    @property
    def untrusted_sources(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for t in self.texts:
            if t.label is Label.UNTRUSTED:
                seen.setdefault(t.source or "untrusted content")
        return tuple(seen)

    def on_page(self, word: str) -> bool:
        """Does the untrusted content (or the kernel's public text) contain this word?"""
        w = word.casefold()
        return w in self._public_words or (len(w) >= SUBSTRING_MIN and w in self._public_text)

    def verbatim(self, text: str, *labels: Label) -> bool:
        needle = text.strip().casefold()
        return bool(needle) and any(needle in t.plain for t in self.texts if t.label in labels)

    def origin(self, word: str) -> Labelled | None:
        """The first private, user or trusted text the word is in (the data it would carry)."""
        w = word.casefold()
        for label in (Label.PRIVATE, Label.USER, Label.TRUSTED):
            for t in self.texts:
                if t.label is label and w in t.words:
                    return t
        return None


@dataclass(frozen=True)
class Leak:
    """Words of one argument that the untrusted content did not contain."""

    argument: str  # the argument's path ("url", "query", "headers/x")
    value: str  # the argument's value (cut to 200 characters)
    words: tuple[str, ...]
    origins: tuple[str, ...]  # where each word came from, as a person reads it

    def describe(self) -> str:
        parts = [f"{w!r} ({o})" for w, o in zip(self.words, self.origins)]
        return f"{', '.join(parts)} in {self.argument}"


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path or "value", value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}/{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}/{i}" if path else str(i))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path or "value", str(value)


def url_payload(url: str) -> str:
    """What a URL carries besides its destination: user info, path, query, fragment (decoded)."""
    parts = urllib.parse.urlsplit(url.strip())
    pieces = [parts.username or "", parts.password or ""]
    pieces += [urllib.parse.unquote(s) for s in parts.path.split("/")]
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        pieces += [key, value]
    if parts.query and "=" not in parts.query:
        pieces.append(urllib.parse.unquote_plus(parts.query))
    pieces.append(urllib.parse.unquote(parts.fragment))
    return " ".join(p for p in pieces if p)


def argument_words(value: str) -> list[str]:
    """The words an argument would send: a URL's payload (not its host), or the whole text."""
    text = value.strip()
    if re.match(r"(?i)[a-z][a-z0-9+.-]*://", text):
        text = url_payload(text)
    seen: dict[str, None] = {}
    for w in _WORD.findall(text):
        seen.setdefault(w)
    return list(seen)


def _origin_text(found: Labelled | None) -> str:
    if found is None:
        return "not in the untrusted content"
    if found.label is Label.TRUSTED and found.source:
        return f"from {found.source}"
    return f"from {found.label.value}"


def leaks(arguments: dict[str, Any], provenance: Provenance) -> list[Leak]:
    """Arguments that would carry words the untrusted content did not contain (empty: none)."""
    found: list[Leak] = []
    for path, value in _strings(arguments):
        # a link on the page, or an address the user typed, goes as it is
        if _URL_IN_TEXT.fullmatch(value.strip()) and provenance.verbatim(value, Label.UNTRUSTED, Label.USER):
            continue
        words = [w for w in argument_words(value) if not provenance.on_page(w)]
        if words:
            origins = tuple(_origin_text(provenance.origin(w)) for w in words)
            found.append(Leak(path, value[:200], tuple(words), origins))
    return found


def typed_destinations(arguments: dict[str, Any], provenance: Provenance) -> set[str]:
    """The places of the URLs in ``arguments`` that the user typed whole in their own messages:
    going there is the user's request, not a new destination an injection chose."""
    from .devices import destination

    found = set()
    for _, value in _strings(arguments):
        if _URL_IN_TEXT.fullmatch(value.strip()) and provenance.verbatim(value, Label.USER):
            try:
                found.add(destination(value))
            except ValueError:
                pass
    return found


def describe_leaks(found: list[Leak], limit: int = 6) -> str:
    """``'4821' (from your messages) in url; ...`` for a consent question."""
    text = "; ".join(leak.describe() for leak in found[:limit])
    return text + (f"; and {len(found) - limit} more" if len(found) > limit else "")
