"""The memory device: archival long-term memory (MemGPT style) on the chromadb "disk".

``remember`` stores a fact, ``recall`` finds the closest entries by meaning and by keyword
(hybrid search, see :mod:`llmos.memory.disk`) and returns them with their ids, ``forget`` deletes
one by id. Recall also searches the documents added with ``llmos memory add``; a page that
contains document text is marked untrusted (files are outside data).

Provenance is kept forever: a fact remembered by a process that has read untrusted content is
stored with ``provenance="untrusted"`` and the sources it read (``devices.caller()``). Recall
labels it on its line and returns the whole page as untrusted data, so the process that reads it
is tainted in its turn: an injected "fact" never comes back as the user's own trusted memory.

The store lives in the device's own folder: ``<data_dir>/devices/memory/chroma``, the same one
``llmos memory`` uses, or on a Chroma server when the config sets ``chroma_url`` (the device's
``chroma_url`` setting). Documents are embedded by the config's ``document_embedder`` (the
device's setting of that name).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

from llmos.kernel.devices import CallContext, Device, DeviceContext, DeviceError, Example, Untrusted

device = Device(
    "memory",
    version="1.0.0",
    description="Long-term memory: remember facts for later, recall them by meaning or keywords, forget them.",
)

MAX_TEXT_CHARS = 4000
SNIPPET_CHARS = 600


class Memory:
    """One device instance: where its store lives, and the store once a call has opened it."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.path = path
        self.settings = settings
        self.store: Any = None

    def open(self) -> Any:
        with self.lock:
            if self.store is None:
                from llmos.memory.disk import DiskStore, StoreError

                try:
                    self.store = DiskStore(self.path, url=self.settings.get("chroma_url") or None,
                                           document_embedder=self.settings.get("document_embedder"))
                except StoreError as exc:
                    raise DeviceError(str(exc)) from None
            return self.store

    def close(self) -> None:
        with self.lock:
            store, self.store = self.store, None
        if store is not None:
            store.close()


@device.setup
def _setup(context: DeviceContext) -> Memory:
    """Remember where the store lives; it opens on first use (chromadb is slow to import)."""
    return Memory(context.data_dir / "chroma", dict(context.settings))


@device.teardown
def _teardown(memory: Memory) -> None:
    memory.close()


def _store(context: CallContext) -> Any:
    return context.state_as(Memory).open()


def _call_store(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from llmos.memory.disk import StoreError

    try:
        return fn(*args, **kwargs)
    except StoreError as exc:
        raise DeviceError(str(exc)) from None


@device.call(
    examples=[Example("Remember that my bike lock code is 4821.", {"text": "my bike lock code is 4821"})],
    timeout_s=20.0,
    side_effects=True,
)
def remember(text: str, context: CallContext) -> str:
    """Store a fact in long-term memory so it can be recalled in a later conversation.

    Args:
        text: The fact to remember, as a short self-contained sentence.
    """
    text = " ".join((text or "").split())
    if not text:
        raise DeviceError("nothing to remember: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise DeviceError(f"too long to remember ({len(text)} characters; at most {MAX_TEXT_CHARS})")
    store, who = _store(context), context.caller
    if who.tainted:
        source = "; ".join(who.sources)[:300] or "untrusted content"
        with context.commit():
            entry_id = _call_store(store.remember, text, source=source, kind="memory", provenance="untrusted")
        return f"Remembered (id {entry_id}, untrusted: from {source}): {text}"
    with context.commit():
        entry_id = _call_store(store.remember, text, source="conversation", kind="memory", provenance="trusted")
    return f"Remembered (id {entry_id}): {text}"


def _describe(hit: Any) -> str:
    meta = hit.metadata
    when = meta.get("created")
    stamp = time.strftime("%Y-%m-%d", time.localtime(float(when))) if isinstance(when, (int, float)) else ""
    if hit.collection == "documents":
        origin = str(meta.get("source", "a document")).rsplit("/", 1)[-1]
        where = f"from {origin}" + (f", part {int(meta['chunk']) + 1}" if "chunk" in meta else "")
    else:
        where = f"remembered {stamp}" if stamp else "remembered"
        if meta.get("provenance") == "untrusted":
            where += f", untrusted: stored after reading {meta.get('source', 'untrusted content')}"
    text = hit.text if len(hit.text) <= SNIPPET_CHARS else hit.text[: SNIPPET_CHARS - 3] + "..."
    return f"[{hit.id}] ({where}) {text}"


@device.call(
    examples=[Example("What did I tell you about my bike lock?", {"query": "bike lock code"})],
    timeout_s=30.0,
)
def recall(query: str, context: CallContext, limit: Annotated[int, {"minimum": 1, "maximum": 20}] = 5) -> Any:
    """Search long-term memory for facts and documents related to a query; returns them with ids.

    Args:
        query: What to look for: a few keywords or a question.
        limit: How many entries to return, best first.
    """
    if not (query or "").strip():
        raise DeviceError("what should I recall? the query is empty")
    hits = _call_store(_store(context).search, query, k=max(1, min(20, int(limit))), collection="all")
    if not hits:
        return "Memory is empty: nothing has been remembered yet."
    page = "\n".join(_describe(h) for h in hits)
    if any(h.metadata.get("provenance") == "untrusted" for h in hits):
        return Untrusted(page, source="memory (includes untrusted entries)")
    return page


@device.call(
    examples=[Example("Forget memory 3fa2c1d9e0b7, it is wrong.", {"id": "3fa2c1d9e0b7"})],
    timeout_s=20.0,
    side_effects=True,
)
def forget(id: str, context: CallContext) -> str:  # noqa: A002 (the name the model sees)
    """Delete one entry from long-term memory by its id (the id recall shows in brackets).

    Args:
        id: The entry's id, e.g. '3fa2c1d9e0b7'.
    """
    entry_id = (id or "").strip().strip("[]")
    if not entry_id:
        raise DeviceError("which entry? give the id that recall shows in brackets")
    store = _store(context)
    with context.commit():
        forgotten = _call_store(store.forget, entry_id)
    if not forgotten:
        raise DeviceError(f"no memory has the id {entry_id!r}")
    return f"Forgot {entry_id}."
