"""Keep folders in sync with the store: `llmos memory add --watch DIR`.

Each :meth:`FolderWatch.scan` walks the folders (the same rules as a folder ingest: ``.gitignore``
honoured, hidden files left out), ingests what is new or changed since the last scan, and forgets
the chunks of files that are gone. A file whose size and modification time are unchanged is not
read again; one that was touched but holds the same bytes is skipped by its sha256. The first scan
after a restart therefore costs one hash per file, not one embedding per chunk. Polling (every two
seconds by default) works on every filesystem, network and container mounts included.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .folders import walk
from .ingest import IngestError, IngestProgress, forget_file, ingest

__all__ = ["FolderWatch", "WatchChanges"]


@dataclass
class WatchChanges:
    added: dict[str, int] = field(default_factory=dict)  # path -> chunks
    updated: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why (binary, too big, no text)

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.skipped)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class FolderWatch:
    def __init__(self, store: Any, folders: Sequence[str | os.PathLike[str]],
                 progress: Callable[[IngestProgress], None] | None = None) -> None:
        self.store = store
        self.folders = [Path(f).expanduser().resolve() for f in folders]
        for folder in self.folders:
            if not folder.is_dir():
                raise IngestError(f"{folder}: not a folder (--watch takes folders)")
        self.progress = progress
        self._seen: dict[Path, tuple[int, int]] = {}
        self._known: set[Path] = set()  # ingested at least once by this watch

    def scan(self) -> WatchChanges:
        changes = WatchChanges()
        present: dict[Path, tuple[int, int]] = {}
        for folder in self.folders:
            for path in walk(folder):
                stamp = _stamp(path)
                if stamp is not None:
                    present[path] = stamp
        for path in sorted(set(self._seen) - set(present)):
            forget_file(self.store, path)
            self._known.discard(path)
            changes.removed.append(str(path))
        todo = [path for path, stamp in present.items() if self._seen.get(path) != stamp]
        for path in todo:
            report = ingest([path], self.store, self.progress, errors="skip")
            if report.errors:
                changes.skipped.update(report.errors)
                forget_file(self.store, path)  # a file that became unreadable keeps no stale chunks
            for source, chunks in report.files.items():
                (changes.updated if path in self._known else changes.added)[source] = chunks
            self._known.add(path)
        self._seen = present
        return changes

    def run(self, stop: threading.Event, interval: float = 2.0,
            on_change: Callable[[WatchChanges], None] | None = None) -> None:
        """Scan until ``stop`` is set, ``interval`` seconds apart (the first scan at once)."""
        while True:
            changes = self.scan()
            if changes and on_change is not None:
                on_change(changes)
            if stop.wait(interval):
                return
