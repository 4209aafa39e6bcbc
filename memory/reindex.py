"""Rebuild the memory store (chromadb) from what the journal recorded: ``llmos memory reindex``.

The journal is the source of truth; the store is an index of it. Three things went into the store,
and the journal keeps each of them:

- facts the model remembered (``memory.remember`` system calls, with the id the store gave them,
  and ``memory.forget`` calls): replayed in order, so ids stay what the user has seen;
- summaries of turns paged out of a context window (the ``paging`` table);
- files ingested with ``llmos memory add`` (the ``ingested`` table): read again from where they
  were; a file that is gone or changed to something unreadable is reported, not fatal.

The old folder is moved aside (``<folder>.broken-<time>``), never deleted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .journal import Journal

__all__ = ["ReindexReport", "reindex"]

log = logging.getLogger(__name__)

# "Remembered (id 3fa2c1d9e0b7): ..." or, stored after untrusted content,
# "Remembered (id 3fa2c1d9e0b7, untrusted: from <source>): ..." (plugins/memory)
_REMEMBERED = re.compile(r"^Remembered \(id ([0-9a-f]+)(?:, untrusted: from (.*?))?\): ", re.S)


@dataclass
class ReindexReport:
    store: str
    moved_aside: str | None = None
    memories: int = 0
    forgotten: int = 0
    summaries: int = 0
    files: dict[str, int] = field(default_factory=dict)  # path -> chunks
    errors: dict[str, str] = field(default_factory=dict)  # path -> why it was not ingested again
    seconds: float = 0.0

    @property
    def chunks(self) -> int:
        return sum(self.files.values())


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _move_aside(path: Path) -> Path | None:
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    path.rename(target)
    return target


def reindex(store_path: Path, journal: Journal, progress: Callable[[Any], None] | None = None,
            *, store_factory: Callable[[Path], Any] | None = None,
            document_embedder: str | None = None) -> ReindexReport:
    """Move the store at ``store_path`` aside and build a new one from ``journal``.

    ``progress`` gets :class:`~llmos.memory.ingest.IngestProgress` while files are read again.
    Raises StoreError when the new store cannot be made (the old one stays moved aside).
    """
    from .disk import DiskStore
    from .ingest import ingest

    started = time.perf_counter()
    report = ReindexReport(str(store_path))
    moved = _move_aside(store_path)
    report.moved_aside = str(moved) if moved else None
    DiskStore.drop_cached(store_path)
    store = store_factory(store_path) if store_factory else DiskStore(store_path, document_embedder=document_embedder)
    try:
        forgotten = journal.forgotten()
        gone = set(forgotten.values())
        _replay_memory_calls(store, journal, report, set(forgotten), gone)
        summaries = [s for s in journal.paged_out() if s["summary"].strip() and s["summary"] not in gone]
        if summaries:
            metas = [{"source": "paging", "kind": "evicted-turn", "provenance": "trusted",
                      "created": _epoch(s["created"]), **({"conversation": s["conversation"]} if s["conversation"] else {})}
                     for s in summaries]
            store.add_many([s["summary"] for s in summaries], metas, collection="memories")
            report.summaries = len(summaries)
        sources = [entry["source"] for entry in journal.ingested()]
        present = [s for s in sources if Path(s).is_file()]
        report.errors.update({s: f"{s}: no such file any more" for s in sources if s not in present})
        if present:
            done = ingest(present, store, progress, errors="skip")
            report.files.update(done.files)
            report.errors.update(done.errors)
            for text in gone:  # document chunks forgotten with `llmos memory forget`
                for entry in store.ids_with_text(text, "documents"):
                    store.forget(entry)
                    report.forgotten += 1
    finally:
        store.close()
    report.seconds = time.perf_counter() - started
    return report


def _replay_memory_calls(store: Any, journal: Journal, report: ReindexReport,
                         forgotten_ids: set[str], forgotten_texts: set[str]) -> None:
    """remember/forget system calls in order; consecutive remembers are stored in one batch.
    Entries forgotten on the command line (their id or their text) are left out."""
    texts: list[str] = []
    ids: list[str] = []
    metas: list[dict[str, Any]] = []

    def flush() -> None:
        if texts:
            store.add_many(texts, metas, collection="memories", ids=ids)
            report.memories += len(texts)
            texts.clear(), ids.clear(), metas.clear()

    for call in journal.memory_calls():
        result = call["result"] if isinstance(call["result"], str) else ""
        if call["call"] == "remember":
            match = _REMEMBERED.match(result)
            text = str(call["arguments"].get("text", "")).strip()
            if not match or not text:
                log.warning("reindex: a remember call without an id or a text, skipped: %r", result[:80])
                continue
            text = " ".join(text.split())
            if match.group(1) in forgotten_ids or text in forgotten_texts:
                report.forgotten += 1
                continue
            untrusted_from = match.group(2)  # the label is kept forever: a rebuild does not launder it
            meta: dict[str, Any] = {"source": untrusted_from or "conversation", "kind": "memory",
                                    "provenance": "untrusted" if untrusted_from else "trusted",
                                    "created": _epoch(call["created"])}
            if call["conversation"]:
                meta["conversation"] = call["conversation"]
            texts.append(text)
            ids.append(match.group(1))
            metas.append(meta)
        elif call["call"] == "forget":
            flush()
            entry = str(call["arguments"].get("id", "")).strip().strip("[]")
            if entry and store.forget(entry):
                report.forgotten += 1
                report.memories -= 1
    flush()
