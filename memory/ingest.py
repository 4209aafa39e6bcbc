"""Ingest files and folders into the ``documents`` collection of a :class:`~llmos.memory.disk.DiskStore`.

What a file is comes from its content (:mod:`.formats`): any text file (README, LICENSE,
``notes.2``, ``.rst``, ``.org``, ``.tex``, ``.csv``, ``.json``, ``.yaml``, source code), HTML,
PDF, Word ``.docx``, OpenDocument ``.odt``, EPUB and e-mail ``.eml``. Chunks follow the
document's structure and carry their heading path (:mod:`.chunking`). A folder is walked
recursively, honouring ``.gitignore`` files (:mod:`.folders`); its binary and huge files are
skipped with one line each and the rest go on.

Each file's sha256 is kept with its chunks: ingesting an unchanged file again does nothing, and a
changed one replaces its earlier chunks. Files are read as a stream and chunks stored in batches,
so a 50 MB text file is never held in memory. A file that cannot be ingested raises
:class:`IngestError` (a ``ValueError``) with one line naming it.

    report = ingest(["notes.md", "paper.pdf", "~/Documents"], store, progress=print)
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chunking import CHUNK_CHARS, chunk_paragraphs, chunk_sections, iter_paragraphs, iter_sections, mark_headings
from .folders import walk
from .formats import Counter, FormatError, kind_of, lines, sniff

__all__ = [
    "CHUNK_CHARS",
    "IngestError",
    "IngestProgress",
    "IngestReport",
    "chunk_paragraphs",
    "file_digest",
    "ingest",
    "iter_chunks",
    "iter_paragraphs",
]

_BATCH = 64  # chunks embedded and stored together
IngestError = FormatError  # one error for every file that cannot be ingested


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
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why a folder's file was left out
    unchanged: list[str] = field(default_factory=list)  # already ingested with the same content
    seconds: float = 0.0

    @property
    def chunks(self) -> int:
        return sum(self.files.values())


def _style(path: Path) -> str:
    return "org" if path.suffix.lower() == ".org" else "text"


def iter_sectioned(path: str | os.PathLike[str], limit: int = CHUNK_CHARS,
                   counter: Counter | None = None) -> Iterator[tuple[str, str]]:
    """``(heading path, chunk)`` for one file, streamed (checked first: IngestError if unusable)."""
    path = Path(path)
    kind = kind_of(path)
    encoding = sniff(path, kind)
    pieces = mark_headings(lines(path, kind, counter or Counter(), encoding), _style(path))
    yield from chunk_sections(iter_sections(iter_paragraphs(pieces, limit)), limit)


def iter_chunks(path: str | os.PathLike[str], limit: int = CHUNK_CHARS) -> Iterator[str]:
    """The chunks of one file, streamed (the file is checked first: IngestError if unusable)."""
    for _, chunk in iter_sectioned(path, limit):
        yield chunk


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                digest.update(block)
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _expand(paths: Iterable[str | os.PathLike[str]], report: IngestReport) -> list[Path]:
    """The files to ingest: named files as they are, folders walked (their unusable files skipped)."""
    files: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if path.is_dir():
            found = 0
            for file in walk(path):
                try:
                    kind_of(file)
                except IngestError as exc:
                    report.skipped[str(file)] = str(exc)
                    continue
                files.append(file)
                found += 1
            if not found:
                raise IngestError(f"{path}: no documents in this folder")
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
    (its number in the file), ``section`` (its heading path), ``sha256`` (of the file),
    ``provenance`` (``untrusted``: file contents are outside data), ``created``, ``format``.
    ``errors="raise"`` stops at the first bad file named (its chunks are not kept); ``"skip"``
    records it in the report's ``errors`` and goes on. A folder's unusable files are always
    skipped (``report.skipped``), never errors.
    """
    if errors not in ("raise", "skip"):
        raise ValueError("errors must be 'raise' or 'skip'")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    started = time.perf_counter()
    report = IngestReport()
    files = _expand(paths, report)
    if errors == "raise":
        for path in files:  # refuse bad files before storing anything
            kind_of(path)
    for number, path in enumerate(files, 1):
        try:
            chunks = _ingest_one(path, store, progress, number, len(files), limit, provenance)
        except IngestError as exc:
            if errors == "raise":
                raise
            report.errors[str(path)] = str(exc)
            continue
        if chunks is None:
            report.unchanged.append(str(path))
        else:
            report.files[str(path)] = chunks
    report.seconds = time.perf_counter() - started
    return report


def forget_file(store: Any, path: str | os.PathLike[str]) -> int:
    """Remove every chunk of the file ``path`` (the watcher calls it for a deleted file)."""
    ids = store.ids_where({"source": str(Path(path).resolve())}, collection="documents")
    return store.forget_many(ids, collection="documents") if ids else 0


def _ingest_one(
    path: Path,
    store: Any,
    progress: Callable[[IngestProgress], None] | None,
    number: int,
    total_files: int,
    limit: int,
    provenance: str,
) -> int | None:
    """Chunks stored from ``path``, or None when it is already in the store unchanged."""
    kind = kind_of(path)
    source = str(path.resolve())
    size = path.stat().st_size
    digest = file_digest(path)
    previous = store.ids_where({"source": source}, collection="documents")
    if previous and len(store.ids_where({"$and": [{"source": source}, {"sha256": digest}]})) == len(previous):
        if progress is not None:
            progress(IngestProgress(source, number, total_files, len(previous), size, size, done=True))
        return None
    counter = Counter()
    created = time.time()
    stored: list[str] = []
    batch: list[tuple[str, str]] = []

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
            {"source": source, "kind": "document", "chunk": first + i, "section": section, "sha256": digest,
             "provenance": provenance, "created": created, "format": kind}
            for i, (section, _) in enumerate(batch)
        ]
        stored.extend(store.add_many([text for _, text in batch], metas, collection="documents"))
        batch.clear()
        if progress is not None:
            progress(IngestProgress(source, number, total_files, len(stored), bytes_done(), size))

    try:
        for item in iter_sectioned(path, limit, counter):
            batch.append(item)
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
