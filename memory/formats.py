"""What a file is, by its content, and its text as lines: the readers behind :mod:`.ingest`.

A file's kind comes from what it holds, not its name: README, LICENSE, ``notes.2``, ``.rst``,
``.org``, ``.tex``, ``.csv``, ``.json``, ``.yaml`` and source code are text because their bytes
are text. Names decide only between formats that are containers of text: ``.pdf``, ``.html``,
``.docx``, ``.odt``, ``.epub`` and ``.eml`` (each also recognised by its content when misnamed).

Every reader yields lines (or bounded pieces of one long line). Headings come out as Markdown
ATX lines (``## Refunds``) whatever the format, so the chunker sees one kind of structure.
The container formats go through well-kept libraries: python-docx, odfpy, EbookLib, pypdf and
the standard library's ``email``.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TextIO

__all__ = ["FormatError", "Counter", "MAX_FILE_BYTES", "kind_of", "lines", "sniff"]

_READ = 16 * 1024  # the longest piece of a line read at once (bounds memory on one-line files)
_SNIFF = 8192
MAX_FILE_BYTES = 512 * 1024 * 1024  # a bigger file is refused: it is not a document a person keeps

BY_NAME = {".pdf": "pdf", ".html": "html", ".htm": "html", ".xhtml": "html", ".docx": "docx",
           ".odt": "odt", ".epub": "epub", ".eml": "eml"}
_ZIP_KINDS = {"application/vnd.oasis.opendocument.text": "odt", "application/epub+zip": "epub"}


class FormatError(ValueError):
    """A file that cannot be read as a document (binary, empty, damaged, too big). One line."""


class Counter:
    """Counts the bytes read from a file, for progress."""

    def __init__(self) -> None:
        self.raw: Any = None
        self.count = 0


# --- what the file is -----------------------------------------------------------------------


def _head(path: Path) -> tuple[int, bytes]:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            return size, f.read(_SNIFF)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _zip_kind(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "mimetype" in names:
                return _ZIP_KINDS.get(zf.read("mimetype").decode("ascii", "replace").strip())
            return "docx" if "word/document.xml" in names else None
    except (zipfile.BadZipFile, OSError, KeyError):
        return None


def _text_encoding(head: bytes) -> str | None:
    """``utf-8-sig`` or ``latin-1`` for text, None for binary."""
    if b"\x00" in head:
        return None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8-sig"
    except UnicodeDecodeError:  # not UTF-8: mostly-printable Latin-1 text is text, the rest is not
        printable = sum(1 for b in head if b >= 32 or b in (9, 10, 12, 13))
        return "latin-1" if printable / max(1, len(head)) >= 0.95 else None


def kind_of(path: Path) -> str:
    """``text``, ``html``, ``pdf``, ``docx``, ``odt``, ``epub`` or ``eml``; FormatError if none."""
    size, head = _head(path)
    if size == 0:
        raise FormatError(f"{path}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise FormatError(f"{path}: too big for a document ({size / 2**20:.0f} MB, at most {MAX_FILE_BYTES // 2**20} MB)")
    named = BY_NAME.get(path.suffix.lower())
    if head.startswith(b"%PDF-"):
        return "pdf"
    if named == "pdf":
        raise FormatError(f"{path}: not a PDF file (no %PDF- header)")
    if head.startswith(b"PK\x03\x04"):
        found = _zip_kind(path)
        if found is None:
            raise FormatError(f"{path}: an archive, not a document")
        return found
    if named in ("docx", "odt", "epub"):
        raise FormatError(f"{path}: not a {named} file (not a zip archive)")
    if _text_encoding(head) is None:
        raise FormatError(f"{path}: a binary file, not text")
    if named is not None:
        return named
    start = head.lstrip()[:256].lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def sniff(path: Path, kind: str) -> str:
    """The text encoding of a text or HTML file (``binary`` for the container formats)."""
    if kind not in ("text", "html"):
        return "binary"
    _, head = _head(path)
    return _text_encoding(head) or "latin-1"


# --- text and HTML --------------------------------------------------------------------------


def _text_lines(f: TextIO) -> Iterator[str]:
    """Lines of a text stream, long lines in bounded pieces (a piece never ends a paragraph)."""
    while True:
        piece = f.readline(_READ)
        if not piece:
            return
        yield piece


_BREAK = "\x00"  # a paragraph break in HTML (source newlines are mere spaces there)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


class _HTMLText(HTMLParser):
    """Text of an HTML stream; block-level tags end paragraphs, headings become ``#`` lines;
    script, style and head are skipped (the title is kept)."""

    BLOCK = frozenset(
        "p div br hr li ul ol h1 h2 h3 h4 h5 h6 tr table section article header footer nav aside "
        "blockquote pre dd dt dl figure figcaption main form title".split()
    )
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        if tag in self.BLOCK:
            self.out.append(_BREAK)
        if tag in _HEADINGS and not self._skip:
            self.out.append("#" * _HEADINGS[tag] + " ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCK:
            self.out.append(_BREAK)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False
        if tag in self.BLOCK:
            self.out.append(_BREAK)

    def handle_data(self, data: str) -> None:
        if self._skip and not self._in_title:
            return
        self.out.append(data.replace(_BREAK, " "))


def html_lines(f: TextIO) -> Iterator[str]:
    """Lines of text from an HTML stream: one line per text run, a blank line per block break."""
    parser = _HTMLText()
    for piece in _text_lines(f):
        parser.feed(piece)
        yield from _drain(parser, final=False)
    parser.close()
    yield from _drain(parser, final=True)


def _drain(parser: _HTMLText, *, final: bool) -> Iterator[str]:
    if not parser.out:
        return
    text = "".join(parser.out)
    parser.out.clear()
    if not final:  # a word may go on in the next piece: keep it for later
        tail = re.search(r"[^\s\x00]+\Z", text)
        if tail:
            parser.out.append(tail.group())
            text = text[: tail.start()]
    for i, part in enumerate(text.split(_BREAK)):
        if i:
            yield "\n"  # a block-level tag: ends the paragraph
        line = " ".join(part.split())
        if line and line.strip("#"):
            yield line + "\n"


# --- the container formats --------------------------------------------------------------------


def _pdf_lines(path: Path, counter: Counter) -> Iterator[str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    size = path.stat().st_size
    try:
        reader = PdfReader(str(path))
        pages = len(reader.pages)
    except (PdfReadError, OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{path}: cannot read the PDF ({exc})") from None
    for number in range(pages):
        try:
            text = reader.pages[number].extract_text() or ""
        except Exception:  # a damaged page: skip it, keep the rest
            text = ""
        for line in text.splitlines():
            yield line + "\n"
        yield "\n"  # a page ends a paragraph
        counter.count = int(size * (number + 1) / max(1, pages))


def _heading_level(style: str) -> int | None:
    """python-docx style names: ``Title`` is level 1, ``Heading 2`` level 2."""
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else None


def _docx_lines(path: Path, counter: Counter) -> Iterator[str]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx raises many kinds on a damaged file
        raise FormatError(f"{path}: cannot read the Word document ({type(exc).__name__}: {exc})") from None
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            level = _heading_level(block.style.name if block.style is not None else "")
            text = block.text.strip()
            if text:
                yield ("#" * level + " " + text if level else text) + "\n"
        elif isinstance(block, Table):
            for row in block.rows:
                yield " | ".join(cell.text.strip() for cell in row.cells) + "\n"
        yield "\n"
    counter.count = path.stat().st_size


def _odt_lines(path: Path, counter: Counter) -> Iterator[str]:
    from odf import teletype
    from odf.namespaces import TEXTNS
    from odf.opendocument import load

    try:
        document = load(str(path))
    except Exception as exc:  # odfpy raises what its XML parser raises
        raise FormatError(f"{path}: cannot read the OpenDocument file ({type(exc).__name__}: {exc})") from None

    def walk(node: Any) -> Iterator[str]:
        for child in node.childNodes:
            if child.qname == (TEXTNS, "h"):
                level = int(child.getAttrNS(TEXTNS, "outline-level") or 1)
                yield "#" * min(6, level) + " " + teletype.extractText(child).strip() + "\n\n"
            elif child.qname == (TEXTNS, "p"):
                text = teletype.extractText(child).strip()
                if text:
                    yield text + "\n\n"
            elif child.nodeType == child.ELEMENT_NODE:
                yield from walk(child)

    yield from walk(document.text)
    counter.count = path.stat().st_size


def _epub_lines(path: Path, counter: Counter) -> Iterator[str]:
    import warnings

    import ebooklib
    from ebooklib import epub

    try:
        with warnings.catch_warnings():  # EbookLib warns about options it will change
            warnings.simplefilter("ignore")
            book = epub.read_epub(str(path), {"ignore_ncx": True})
    except Exception as exc:
        raise FormatError(f"{path}: cannot read the EPUB book ({type(exc).__name__}: {exc})") from None
    items = {item.id: item for item in book.get_items_of_type(ebooklib.ITEM_DOCUMENT)}
    order = [items.pop(ref) for ref, _ in book.spine if ref in items] + list(items.values())
    for item in order:
        yield from html_lines(io.StringIO(item.get_content().decode("utf-8", "replace")))
        yield "\n"
    counter.count = path.stat().st_size


def _eml_lines(path: Path, counter: Counter) -> Iterator[str]:
    from email import policy
    from email.parser import BytesParser

    try:
        with path.open("rb") as f:
            message = BytesParser(policy=policy.default).parse(f)
    except Exception as exc:
        raise FormatError(f"{path}: cannot read the e-mail ({type(exc).__name__}: {exc})") from None
    subject = str(message.get("subject", "") or "").strip() or "(no subject)"
    yield f"# {subject}\n\n"
    for header in ("from", "to", "date"):
        if message.get(header):
            yield f"{header.capitalize()}: {message[header]}\n"
    yield "\n"
    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        content = body.get_content()
        stream = io.StringIO(content if isinstance(content, str) else content.decode("utf-8", "replace"))
        yield from html_lines(stream) if body.get_content_subtype() == "html" else _text_lines(stream)
    attached = [part.get_filename() for part in message.iter_attachments() if part.get_filename()]
    if attached:
        yield "\nAttachments: " + ", ".join(attached) + "\n"
    counter.count = path.stat().st_size


_CONTAINERS = {"pdf": _pdf_lines, "docx": _docx_lines, "odt": _odt_lines, "epub": _epub_lines, "eml": _eml_lines}


def lines(path: Path, kind: str, counter: Counter, encoding: str = "utf-8-sig") -> Iterator[str]:
    """The lines of ``path`` read as ``kind`` (from :func:`kind_of`)."""
    reader = _CONTAINERS.get(kind)
    if reader is not None:
        yield from reader(path, counter)
        return
    with path.open("rb") as raw:
        counter.raw = raw
        # UTF-8 (with or without BOM; stray bad bytes become U+FFFD), or Latin-1 when sniffed so
        stream = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline=None)
        yield from (html_lines(stream) if kind == "html" else _text_lines(stream))
