"""The pager: evicted turns go to the disk store; relevant pages come back before a turn.

Summaries are extractive for now (what the user said and the start of the answer): cheap, never
wrong about what was said. A model-written summary is a later improvement.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from llmos.kernel.process import Message

from .chunking import without_heading

log = logging.getLogger(__name__)

MIN_SIMILARITY = 0.35  # below this a page is not relevant enough to spend context on


def summarise(turn: list[Message]) -> str:
    """One line for a turn: the user's words, the device results, the answer's start."""
    user = next((m.content for m in turn if m.role == "user"), "")
    results = [f"{m.call} gave {m.content[:80]}" for m in turn
               if m.role == "tool" and m.trusted and not m.content.startswith("Error:")]
    answer = next((m.content for m in reversed(turn) if m.role == "assistant" and not m.call), "")
    if answer.lstrip().upper().startswith("CALL "):  # a garbled call is not worth remembering
        answer = ""
    day = time.strftime("%Y-%m-%d")
    parts = [f"On {day} the user said: {user.strip()[:300]}"]
    if results:
        parts.append("; ".join(results))
    if answer:
        parts.append(f"llmos answered: {answer.strip()[:200]}")
    return " | ".join(parts)


class DiskPager:
    """A :class:`llmos.kernel.paging.Pager` over a :class:`llmos.memory.disk.DiskStore` (opened on first use).

    Page-out returns the summaries at once and writes them (embedding + chromadb) on a worker
    thread, so the turn does not wait: the write overlaps the answer being generated. The next
    page-in waits for pending writes first, so it always sees them. Nothing is lost if the process
    dies meanwhile: the journal keeps every paged-out summary, and ``llmos memory reindex``
    restores them.
    """

    def __init__(self, store_path: Path, url: str | None = None, *, document_embedder: str | None = None) -> None:
        self.store_path = store_path
        self.url = url or None  # a Chroma server instead of the local folder
        self.document_embedder = document_embedder  # "static" or "minilm"; None: DiskStore's default
        self._store: Any = None
        self._lock = threading.Lock()
        self._writer: Any = None  # a one-thread executor, made on the first page-out
        self._pending: list[Any] = []

    def _write(self, conversation: str, summaries: list[str], untrusted: list[bool]) -> None:
        store = self._disk()
        for summary, outside in zip(summaries, untrusted):
            # a turn that read untrusted content may have an injected answer: it stays untrusted
            store.remember(summary, source="paging", kind="evicted-turn", conversation=conversation,
                           provenance="untrusted" if outside else "trusted")

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every paged-out summary is on disk (a failed write is logged)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            try:
                future.result(timeout)
            except Exception as exc:  # the journal still has the summary: reindex restores it
                log.warning("paging out to %s failed: %s", self.store_path, exc)

    def _disk(self) -> Any:
        with self._lock:
            if self._store is None:
                from llmos.memory.disk import DiskStore

                self._store = DiskStore(self.store_path, url=self.url, document_embedder=self.document_embedder)
            return self._store

    def page_out(self, conversation: str, turns: list[list[Message]]) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        summaries = [summarise(turn) for turn in turns]
        with self._lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-pager")
            untrusted = [any(m.role == "tool" and not m.trusted for m in turn) for turn in turns]
            self._pending.append(self._writer.submit(self._write, conversation, summaries, untrusted))
        return summaries

    def passages(self, query: str) -> list[Any]:
        """The passages of the user's documents that a question about them needs, best first
        (reranked, neighbours merged: :mod:`llmos.memory.rerank`); none when it is not about them."""
        import numpy as np

        from . import rerank

        store = self._disk()
        hits = store.search(query, k=rerank.CANDIDATES, collection="documents")
        if not hits or max(h.similarity or 0.0 for h in hits) < MIN_SIMILARITY:
            return []
        embedder = store.embedder_for("documents")
        stored = store.vectors([hit.id for hit in hits], "documents")  # embedded when ingested
        if len(stored) == len(hits):
            vectors = np.asarray([stored[hit.id] for hit in hits], dtype=np.float32)
        else:  # a chunk forgotten meanwhile: embed what the search found
            vectors = embedder.embed_array([hit.text for hit in hits])
        chosen = rerank.select(rerank.rerank(query, hits, vectors, embedder.embed_array([query])[0]))
        return chosen if rerank.about_documents(chosen) else []

    def page_in(self, conversation: str, query: str, budget_chars: int) -> list[Any]:
        """Relevant memories as text; passages of ingested documents as :class:`Untrusted`, each
        naming its file and section (so the answer can cite them). Passages come first, memories
        after, as many of both as fit ``budget_chars``."""
        from llmos.kernel.devices import Untrusted

        from .rerank import fit

        self.flush()
        items: list[tuple[str, bool, str]] = []  # (text, untrusted, source)
        for found in self.passages(query):
            items.append((passage(found), True, found.source))
        for hit in self._disk().search(query, k=5, collection="memories"):
            if hit.similarity is not None and hit.similarity >= MIN_SIMILARITY:
                source = str(hit.metadata.get("source", ""))
                if hit.metadata.get("provenance") == "untrusted":  # a memory stored after untrusted content
                    items.append((f"(untrusted memory, stored after reading {source or 'untrusted content'}) "
                                  f"{hit.text}", True, source))
                else:
                    items.append((hit.text, False, source))
        texts: list[Any] = []
        for index, text in fit([text for text, _, _ in items], budget_chars):
            _, untrusted, source = items[index]
            texts.append(Untrusted(text, source=source) if untrusted else text)
        return texts


def passage(hit: Any) -> str:
    """A document chunk with its file and section first: ``From the file terms.md [Refunds]: ...``
    (the chunk's own first line is that heading path: it is not said twice)."""
    name = Path(str(hit.metadata.get("source", "a document"))).name
    section = str(hit.metadata.get("section", "") or "")
    text = without_heading(hit.text, section)
    where = f" [{section}]" if section else ""
    return f"From the file {name}{where}: {' '.join(text.split())}"
