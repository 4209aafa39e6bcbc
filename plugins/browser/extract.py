"""Readable text, title and links from HTML: trafilatura first, a plain tag-stripper as fallback."""

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


def extract_text(html: str, url: str) -> tuple[str, str]:
    """(title, readable text) of a page."""
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
