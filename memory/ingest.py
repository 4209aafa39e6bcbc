"""Ingest files into the ``documents`` collection of a :class:`~llmos.memory.disk.DiskStore`.

Supported: ``.txt``, ``.md`` (and ``.markdown``), ``.html``/``.htm`` (tags stripped with the
stdlib parser; scripts and styles dropped), ``.pdf`` (text through pypdf, page by page). A folder
is walked for those files.

Chunking respects paragraphs: text is split on blank lines, small paragraphs are merged up to
about 800 characters, and a paragraph longer than that is cut at sentence ends (or spaces). Files
are read as a stream, a bounded piece of a line at a time, and chunks are stored in batches, so a
50 MB text file is never held in memory.

A binary file, an empty one, or one without any text raises :class:`IngestError` (a
``ValueError``) with one line naming the file. Re-ingesting a file replaces its earlier chunks.

    report = ingest(["notes.md", "paper.pdf"], store, progress=print)
"""

from __future__ import annotations

import codecs
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "CHUNK_CHARS",
    "IngestError",
    "IngestProgress",
    "IngestReport",
    "SUPPORTED",
    "chunk_paragraphs",
    "ingest",
    "iter_chunks",
    "iter_paragraphs",
]

CHUNK_CHARS = 800
SUPPORTED = {".txt": "text", ".md": "text", ".markdown": "text", ".html": "html", ".htm": "html", ".pdf": "pdf"}
_READ = 16 * 1024  # the longest piece of a line read at once (bounds memory on one-line files)
_SNIFF = 8192
_BATCH = 64  # chunks embedded and stored together


class IngestError(ValueError):
    """A file that cannot be ingested (binary, empty, unsupported, unreadable)."""


@dataclass(frozen=True)
class IngestProgress:
    """Reported after each stored batch and at the end of each file."""

    path: str
    file_index: int  # 1-based
    files: int
    chunks: int  # chunks stored so far from this file
    bytes_done: int  # bytes of this file read so far
    bytes_total: int
    done: bool = False


@dataclass
class IngestReport:
    files: dict[str, int] = field(default_factory=dict)  # path -> chunks stored
    errors: dict[str, str] = field(default_factory=dict)  # path -> message (errors="skip")
    seconds: float = 0.0

    @property
    def chunks(self) -> int:
        return sum(self.files.values())


# --- reading: lines from each format -------------------------------------------------------


class _Counter:
    """Counts bytes read from a binary file, for progress."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0


def _sniff(path: Path, kind: str) -> str:
    """Refuse missing, empty and binary files before reading them; returns the text encoding."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(_SNIFF)
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise IngestError(f"{path}: the file is empty")
    if kind == "pdf":
        if not head.startswith(b"%PDF-"):
            raise IngestError(f"{path}: not a PDF file (no %PDF- header)")
        return "binary"
    if b"\x00" in head:
        raise IngestError(f"{path}: a binary file, not text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        # not UTF-8: accept mostly-printable Latin-1 text, refuse the rest
        printable = sum(1 for b in head if b >= 32 or b in (9, 10, 13))
        if printable / max(1, len(head)) < 0.95:
            raise IngestError(f"{path}: a binary file, not text") from None
        return "latin-1"
    return "utf-8-sig"


def _text_lines(f: TextIO) -> Iterator[str]:
    """Lines of a text stream, long lines in bounded pieces (a piece never ends a paragraph)."""
    while True:
        piece = f.readline(_READ)
        if not piece:
            return
        yield piece


_BREAK = "\x00"  # a paragraph break in HTML (source newlines are mere spaces there)


class _HTMLText(HTMLParser):
    """Text of an HTML stream; block-level tags end paragraphs; script/style/head are skipped."""

    BLOCK = frozenset(
        "p div br hr li ul ol h1 h2 h3 h4 h5 h6 tr table section article header footer nav aside "
        "blockquote pre dd dt dl figure figcaption main form title".split()
    )
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    KEEP_IN_HEAD = frozenset({"title"})

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


def _html_lines(f: TextIO) -> Iterator[str]:
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
        if line:
            yield line + "\n"


def _pdf_lines(path: Path, counter: _Counter) -> Iterator[str]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - pypdf is a dependency
        raise IngestError(f"{path}: reading PDF needs the pypdf package") from None
    size = path.stat().st_size
    try:
        reader = PdfReader(str(path))
        pages = len(reader.pages)
    except (PdfReadError, OSError, ValueError, KeyError) as exc:
        raise IngestError(f"{path}: cannot read the PDF ({exc})") from None
    for number in range(pages):
        try:
            text = reader.pages[number].extract_text() or ""
        except Exception:  # a damaged page: skip it, keep the rest
            text = ""
        for line in text.splitlines():
            yield line + "\n"
        yield "\n"  # a page ends a paragraph
        counter.count = int(size * (number + 1) / max(1, pages))


def _lines(path: Path, kind: str, counter: _Counter, encoding: str = "utf-8-sig") -> Iterator[str]:
    if kind == "pdf":
        yield from _pdf_lines(path, counter)
        return
    with path.open("rb") as raw:
        counter.raw = raw
        stream = _decoded(raw, encoding)
        yield from (_html_lines(stream) if kind == "html" else _text_lines(stream))


def _decoded(raw: Any, encoding: str) -> TextIO:
    """UTF-8 (with or without BOM; stray bad bytes become U+FFFD), or Latin-1 when sniffed so."""
    import io

    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline=None)


# --- paragraphs and chunks ------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def iter_paragraphs(lines: Iterable[str], limit: int = CHUNK_CHARS) -> Iterator[str]:
    """Paragraphs (text between blank lines, whitespace collapsed) from lines or pieces of lines.

    ``lines`` may hold pieces of a long line (no trailing newline): they are joined as they
    were. A paragraph is yielded in parts once it grows past a few times ``limit``, so memory
    stays bounded however long it is; :func:`chunk_paragraphs` cuts the parts at sentence ends.
    """
    raw: list[str] = []
    size = 0
    cap = 4 * limit
    line_start = True  # the previous piece ended a line
    for piece in lines:
        if line_start and not piece.strip() and piece.endswith("\n"):
            if raw:  # a blank line ends the paragraph
                text = " ".join("".join(raw).split())
                if text:
                    yield text
                raw, size = [], 0
            continue
        line_start = piece.endswith("\n")
        raw.append(piece)
        size += len(piece)
        if size >= cap:
            joined = "".join(raw)
            text = " ".join(joined.split())
            cut = _last_break(text, len(text) - limit)
            yield text[:cut].strip()
            rest = text[cut:].strip()
            if rest and joined[-1:].isspace():
                rest += " "
            raw, size = ([rest] if rest else []), len(rest)
    if raw:
        text = " ".join("".join(raw).split())
        if text:
            yield text


def _last_break(text: str, before: int) -> int:
    """Index of a good place to cut ``text`` at or before ``before`` (a sentence end, a space)."""
    before = max(1, min(before, len(text)))
    window = text[:before]
    ends = [m.end() for m in _SENTENCE_END.finditer(window)]
    if ends and ends[-1] > before // 2:
        return ends[-1]
    space = window.rfind(" ")
    return space + 1 if space > before // 2 else before


def _split_long(paragraph: str, limit: int) -> Iterator[str]:
    text = paragraph
    while len(text) > limit:
        cut = _last_break(text, limit)
        yield text[:cut].strip()
        text = text[cut:].lstrip()
    if text:
        yield text


def chunk_paragraphs(paragraphs: Iterable[str], limit: int = CHUNK_CHARS) -> Iterator[str]:
    """Chunks of at most ``limit`` characters: whole paragraphs merged, long ones cut."""
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        pieces = [paragraph] if len(paragraph) <= limit else list(_split_long(paragraph, limit))
        for piece in pieces:
            extra = len(piece) + (2 if current else 0)
            if current and size + extra > limit:
                yield "\n\n".join(current)
                current, size = [], 0
                extra = len(piece)
            current.append(piece)
            size += extra
    if current:
        yield "\n\n".join(current)


def iter_chunks(path: str | os.PathLike[str], limit: int = CHUNK_CHARS) -> Iterator[str]:
    """The chunks of one file, streamed (the file is checked first: IngestError if unusable)."""
    path = Path(path)
    kind = _kind(path)
    encoding = _sniff(path, kind)
    yield from chunk_paragraphs(iter_paragraphs(_lines(path, kind, _Counter(None), encoding), limit), limit)


def _kind(path: Path) -> str:
    kind = SUPPORTED.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(SUPPORTED))
        raise IngestError(f"{path}: unsupported file type {path.suffix or '(none)'!r} (supported: {known})")
    return kind


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED)
            if not found:
                raise IngestError(f"{path}: no .txt, .md, .html or .pdf files in this folder")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise IngestError(f"{path}: no such file")
    return files


# --- ingest ---------------------------------------------------------------------------------


def ingest(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    store: Any,
    progress: Callable[[IngestProgress], None] | None = None,
    *,
    errors: str = "raise",
    limit: int = CHUNK_CHARS,
    provenance: str = "untrusted",
) -> IngestReport:
    """Chunk ``paths`` (files or folders) into ``store``'s ``documents`` collection.

    Each chunk's metadata: ``source`` (the absolute path), ``kind`` ``"document"``, ``chunk``
    (its number in the file), ``provenance`` (``untrusted``: file contents are outside data),
    ``created``. ``errors="raise"`` stops at the first bad file (its chunks are not kept);
    ``"skip"`` records it in the report's ``errors`` and goes on.
    """
    if errors not in ("raise", "skip"):
        raise ValueError("errors must be 'raise' or 'skip'")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    started = time.perf_counter()
    report = IngestReport()
    files = _expand(paths)
    if errors == "raise":
        for path in files:  # refuse bad files before storing anything
            _sniff(path, _kind(path))
    for number, path in enumerate(files, 1):
        try:
            report.files[str(path)] = _ingest_one(path, store, progress, number, len(files), limit, provenance)
        except IngestError as exc:
            if errors == "raise":
                raise
            report.errors[str(path)] = str(exc)
    report.seconds = time.perf_counter() - started
    return report


def _ingest_one(
    path: Path,
    store: Any,
    progress: Callable[[IngestProgress], None] | None,
    number: int,
    total_files: int,
    limit: int,
    provenance: str,
) -> int:
    kind = _kind(path)
    encoding = _sniff(path, kind)
    source = str(path.resolve())
    size = path.stat().st_size
    previous = store.ids_where({"source": source}, collection="documents")
    counter = _Counter(None)
    created = time.time()
    stored: list[str] = []
    batch: list[str] = []

    def bytes_done() -> int:
        if counter.raw is not None:
            try:
                return min(size, counter.raw.tell())
            except (OSError, ValueError):
                return counter.count
        return counter.count

    def flush() -> None:
        first = len(stored)
        metas = [
            {"source": source, "kind": "document", "chunk": first + i, "provenance": provenance,
             "created": created, "format": kind}
            for i in range(len(batch))
        ]
        stored.extend(store.add_many(batch, metas, collection="documents"))
        batch.clear()
        if progress is not None:
            progress(IngestProgress(source, number, total_files, len(stored), bytes_done(), size))

    try:
        for chunk in chunk_paragraphs(iter_paragraphs(_lines(path, kind, counter, encoding), limit), limit):
            batch.append(chunk)
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()
    except BaseException:
        if stored:  # no half-ingested file
            store.forget_many(stored, collection="documents")
        raise
    if not stored:
        raise IngestError(f"{path}: no text found in the file")
    if previous:  # re-ingest: the new chunks replace the old ones
        store.forget_many(previous, collection="documents")
    if progress is not None:
        progress(IngestProgress(source, number, total_files, len(stored), size, size, done=True))
    return len(stored)
