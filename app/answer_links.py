"""Links and images in an answer from a tainted conversation: shown as text, never followed.

An answer written after the conversation read untrusted content may carry an injected link (the
fraud link of the Bing case) or an image whose URL carries the user's data out as soon as it is
loaded. :func:`defang` rewrites such an answer's Markdown before the window renders it:

- ``![alt](url)`` and ``<img ...>`` become ``[image not shown: alt, from host]``;
- ``[label](url)``, ``<url>`` autolinks, bare URLs and reference links become the label with the
  address as code text and its host named, so nothing is clickable and nothing is fetched;
- a URL whose path or query carries words from the conversation (the user's messages) is flagged
  with the words it would carry;
- e-mail addresses are code text (no mailto link); raw HTML is shown as text.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from llmos.kernel.flow import argument_words, words_of

FLAG = "⚠"
MIN_FLAG_WORD = 3  # shorter words ("a", "id") are too common to say they came from the conversation

_TITLE = r'(?:\s+"[^"]*")?'
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]*)>?" + _TITLE + r"\s*\)")
_LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]*)>?" + _TITLE + r"\s*\)")
_REFERENCE = re.compile(r"^[ ]{0,3}\[([^\]]+)\]:[ \t]*<?(\S+?)>?(?:[ \t]+[^\n]*)?$", re.MULTILINE)
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto|file|data):[^>\s]*)>", re.IGNORECASE)
_HTML_IMG = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']?([^\"'\s>]+)[^>]*>", re.IGNORECASE)
_BARE = re.compile(r"(?<![`\w/])((?:https?|ftp|file)://[^\s<>`)\]]+|www\.[^\s<>`)\]]+)", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![`\w.+-])([\w.+-]+@[\w-]+(?:\.[\w-]+)+)")  # the reader would make it a mailto link
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)


@dataclass(frozen=True)
class FoundLink:
    url: str
    host: str
    image: bool
    carries: tuple[str, ...]  # words of the conversation the URL would carry


def host_of(url: str) -> str:
    text = url.strip()
    if text.lower().startswith("www."):
        text = "http://" + text
    return urllib.parse.urlsplit(text).hostname or "an unknown place"


def carried(url: str, words: set[str]) -> tuple[str, ...]:
    """The URL's path and query words that are among the conversation's ``words`` (casefolded)."""
    return tuple(w for w in argument_words(url) if len(w) >= MIN_FLAG_WORD and w.casefold() in words)


class _Defanger:
    def __init__(self, conversation: Iterable[str]) -> None:
        self.words = set().union(*(words_of(text) for text in conversation))  # once, not per link
        self.found: list[FoundLink] = []

    def _note(self, url: str, image: bool) -> str:
        url = url.replace("`", "")
        link = FoundLink(url, host_of(url), image, carried(url, self.words))
        self.found.append(link)
        flag = ""
        if link.carries:
            flag = f" {FLAG} carries words from this conversation: " + ", ".join(f"'{w}'" for w in link.carries)
        host = f"`{link.host}`"  # code text: the Markdown reader would make a bare host a link
        return f"`{url}` (host {host}, not opened{flag})" if not image else \
            f"(from {host}, not loaded: `{url}`{flag})"

    def image(self, m: re.Match[str]) -> str:
        alt = m.group(1).strip() or "image"
        return f"[image not shown: {alt} {self._note(m.group(2), True)}]"

    def link(self, m: re.Match[str]) -> str:
        label = m.group(1).strip()
        return f"{label} {self._note(m.group(2), False)}".strip()

    def reference(self, m: re.Match[str]) -> str:
        return f"[{m.group(1)}]: {self._note(m.group(2), False)}"

    def bare(self, m: re.Match[str]) -> str:
        return self._note(m.group(1), False)

    def html_img(self, m: re.Match[str]) -> str:
        return f"[image not shown {self._note(m.group(1), True)}]"

    def prose(self, text: str) -> str:
        text = _HTML_IMG.sub(self.html_img, text)
        text = _IMAGE.sub(self.image, text)
        text = _LINK.sub(self.link, text)
        text = _REFERENCE.sub(self.reference, text)
        text = _AUTOLINK.sub(self.bare, text)
        parts = _CODE.split(text)  # the notes are code spans: leave them (and real code) alone
        out = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(part)
            else:
                part = _EMAIL.sub(lambda m: f"`{m.group(1)}`", _BARE.sub(self.bare, part))
                out.append(part.replace("<", "&lt;"))  # raw HTML is text
        return "".join(out)


def defang(text: str, conversation: Iterable[str] = ()) -> tuple[str, list[FoundLink]]:
    """The answer's Markdown with every link and image as inert text, and what was found."""
    worker = _Defanger(conversation)
    parts = re.split(r"(```.*?```)", text, flags=re.DOTALL)  # fenced code is shown as it is
    rewritten = [part if i % 2 else worker.prose(part) for i, part in enumerate(parts)]
    return "".join(rewritten), worker.found
