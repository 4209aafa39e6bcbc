"""Chunks that keep their context: paragraphs, headings, sections, and chunks of a document.

Chunking respects paragraphs: text is split on blank lines, small paragraphs are merged up to
about ``CHUNK_CHARS`` characters, and a paragraph longer than that is cut at sentence ends (or
spaces). Chunks follow the document's structure: a heading starts a new chunk, and each chunk
carries its heading path (``Returns > Refunds``) as its first line, so a passage that says "30
days" still knows which section it belongs to. Headings are found in the lines a reader yields:

- Markdown ATX (``## Refunds``, what every reader in :mod:`.formats` writes for its headings);
- underlined titles (Markdown setext, reStructuredText: ``=====`` under the title, the first
  underline character seen is level 1, the next level 2, ...);
- LaTeX ``\\chapter``, ``\\section``, ``\\subsection`` and ``\\subsubsection``;
- Org-mode ``* Heading`` in ``.org`` files;
- numbered clauses on a line of their own (``3.2 Refunds``), nested under the headings.

Everything streams: a 50 MB file is never held in memory.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator

__all__ = ["CHUNK_CHARS", "chunk_paragraphs", "chunk_sections", "iter_paragraphs", "iter_sections", "mark_headings", "without_heading"]

CHUNK_CHARS = 800
_MARK = "\x01"  # starts a heading paragraph: MARK level MARK title
_TITLE_MAX = 120  # a longer line is never a heading
_PATH_MAX = 160  # the heading path a chunk carries, at most (the deepest parts are kept)

_ATX = re.compile(r"(#{1,6})[ \t]+(.+?)[ \t#]*")
_UNDERLINE = re.compile(r"([=\-~^*+#\"'`:.])\1{2,}")
_LATEX = re.compile(r"\\(chapter|section|subsection|subsubsection)\*?\{(.+)\}.*")
_LATEX_LEVELS = {"chapter": 1, "section": 2, "subsection": 3, "subsubsection": 4}
_ORG = re.compile(r"(\*{1,6})[ \t]+(.+)")
_CLAUSE = re.compile(r"(\d{1,3}(?:\.\d{1,3}){0,4})\.?[ \t]+([A-Z][^\n]{0,78})")
_CLAUSE_BASE = 10  # clause levels nest under any heading


def _heading(level: int, title: str) -> list[str]:
    return ["\n", f"{_MARK}{level}{_MARK}{' '.join(title.split())}\n", "\n"]


def mark_headings(pieces: Iterable[str], style: str = "text") -> Iterator[str]:
    """The lines again, each heading turned into a paragraph of its own that
    :func:`iter_sections` reads. ``style`` ``org`` also reads Org-mode stars as headings."""
    underlines: list[str] = []  # underline characters in order of first use: their levels
    held: str | None = None  # the previous whole line: it may be a title if an underline follows
    line_start = True
    for piece in pieces:
        whole = line_start and piece.endswith("\n")
        line_start = piece.endswith("\n")
        text = piece.strip()
        if not whole or len(text) > _TITLE_MAX:
            if held is not None:
                yield held
                held = None
            yield piece
            continue
        if held is not None:
            under = _UNDERLINE.fullmatch(text)
            title = held.strip()
            if under and title and not _UNDERLINE.fullmatch(title) and len(text) >= min(3, len(title)):
                char = under.group(1)
                if char not in underlines:
                    underlines.append(char)
                held = None
                yield from _heading(underlines.index(char) + 1, title)
                continue
            yield held
            held = None
        found = _ATX.fullmatch(text) or _LATEX.fullmatch(text) or (style == "org" and _ORG.fullmatch(text))
        if found:
            marks, title = found.group(1), found.group(2)
            level = _LATEX_LEVELS.get(marks) or len(marks)
            yield from _heading(level, title.strip("{} "))
        elif text:
            held = piece
        else:
            yield piece
    if held is not None:
        yield held


def iter_sections(paragraphs: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(heading path, paragraph)`` for each paragraph of text (heading paragraphs set the path)."""
    path: list[tuple[int, str]] = []
    for paragraph in paragraphs:
        if paragraph.startswith(_MARK):
            _, level, title = paragraph.split(_MARK, 2)
            depth = int(level)
        elif (clause := _CLAUSE.fullmatch(paragraph)) and not paragraph.endswith((".", ",", ";", ":", "!", "?")):
            depth, title = _CLAUSE_BASE + clause.group(1).count(".") + 1, paragraph
        elif _UNDERLINE.fullmatch(paragraph):  # a rule, or an overline of a title: no text
            continue
        else:
            yield _path_text(path), paragraph
            continue
        path = [(d, t) for d, t in path if d < depth] + [(depth, title.strip())]


def _path_text(path: list[tuple[int, str]]) -> str:
    text = " > ".join(title for _, title in path if title)
    return text if len(text) <= _PATH_MAX else "… " + text[-_PATH_MAX:].lstrip()


def without_heading(chunk: str, section: str) -> str:
    """A chunk's text without the heading path :func:`chunk_sections` put on its first line."""
    return chunk[len(section) + 2:] if section and chunk.startswith(section + "\n\n") else chunk


def chunk_sections(sections: Iterable[tuple[str, str]], limit: int = CHUNK_CHARS) -> Iterator[tuple[str, str]]:
    """``(heading path, chunk)``: a section's paragraphs chunked, the path as the chunk's first line."""
    for section, group in itertools.groupby(sections, key=lambda item: item[0]):
        header = f"{section}\n\n" if section else ""
        for body in chunk_paragraphs((paragraph for _, paragraph in group), max(limit // 2, limit - len(header))):
            yield section, header + body


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
