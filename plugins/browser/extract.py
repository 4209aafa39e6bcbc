"""Readable text, title and links from HTML: trafilatura first, a plain tag-stripper as fallback.

Before extraction, elements a reader cannot see are dropped: the ``hidden`` attribute,
``aria-hidden="true"``, and inline ``display: none`` / ``visibility: hidden`` (the usual places
for instructions aimed at a model rather than a person). Text hidden by other means (white on
white, a stylesheet rule) stays: everything the browser returns is untrusted data anyway.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from html.parser import HTMLParser

log = logging.getLogger(__name__)

_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
          "header", "footer", "blockquote", "pre", "table", "ul", "ol", "title", "hr"}


class _Stripper(HTMLParser):
    """Text outside script/style, with line breaks at block elements; the <title>; the links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self.links: list[tuple[str, str]] = []
        self._skip = 0
        self._in_title = False
        self._href: str | None = None
        self._anchor: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP:
            self._skip += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a":
            self._href, self._anchor = dict(attrs).get("href"), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP and self._skip:
            self._skip -= 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a" and self._href:
            self.links.append((self._href, " ".join("".join(self._anchor).split())))
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)
            if self._href is not None:
                self._anchor.append(data)


def _strip(html: str) -> _Stripper:
    parser = _Stripper()
    parser.feed(html)
    parser.close()
    return parser


def _tidy(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_STYLE = "translate(@style, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ \t\n', 'abcdefghijklmnopqrstuvwxyz')"
_HIDDEN = (f"//*[@hidden or @aria-hidden='true' or contains({_STYLE}, 'display:none')"
           f" or contains({_STYLE}, 'visibility:hidden')]")


def drop_hidden(html: str) -> tuple[str, int]:
    """``html`` without the elements a reader cannot see, and how many were dropped."""
    try:
        import lxml.html

        root = lxml.html.document_fromstring(html)
        hidden = [e for e in root.xpath(_HIDDEN) if e.getparent() is not None and e.tag not in ("html", "body")]
        for element in hidden:
            element.drop_tree()
        if not hidden:
            return html, 0
        return lxml.html.tostring(root, encoding="unicode"), len(hidden)
    except Exception as exc:  # odd markup: extract from it as it is
        log.info("could not look for hidden elements: %s", exc)
        return html, 0


def extract_text(html: str, url: str) -> tuple[str, str]:
    """(title, readable text) of a page, without the elements a reader cannot see."""
    html, dropped = drop_hidden(html)
    if dropped:
        log.info("%s: dropped %d hidden element(s) before reading it", url, dropped)
    title, text = "", ""
    try:
        import trafilatura

        text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True,
                                   favor_recall=True) or ""
        metadata = trafilatura.extract_metadata(html, default_url=url)
        title = (metadata.title if metadata and metadata.title else "") or ""
    except Exception as exc:  # trafilatura on odd input: fall back below
        log.info("trafilatura failed on %s: %s", url, exc)
    if not text.strip() or not title:
        stripped = _strip(html)
        title = title or " ".join(stripped.title.split())
        text = text if text.strip() else "".join(stripped.parts)
    return title.strip(), _tidy(text)


def extract_links(html: str, base_url: str) -> list[dict[str, str]]:
    """The page's http(s) links, absolute, in order, without duplicates."""
    seen: set[str] = set()
    links: list[dict[str, str]] = []
    for href, text in _strip(html).links:
        absolute = urllib.parse.urljoin(base_url, href)
        if urllib.parse.urlsplit(absolute).scheme in ("http", "https") and absolute not in seen:
            seen.add(absolute)
            links.append({"url": absolute, "text": text[:200]})
    return links
