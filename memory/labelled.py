"""Retrieval quality on a labelled set: recall@k of :meth:`DiskStore.search` (bench and tests).

The set (``bench/data/memory_recall.json``) has memories and documents, each entry with a key, and
queries naming the keys that answer them. Memories are stored with ``remember``; each document is
written to a file and ingested, so its entries are found inside chunks. A query counts as
recalled when a hit among the first ``k`` contains the text of one of its entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LabelledSet", "RecallResult", "load", "recall_at_k"]


@dataclass(frozen=True)
class LabelledSet:
    memories: dict[str, str]
    documents: dict[str, dict[str, str]]  # file name -> key -> paragraph
    queries: list[tuple[str, list[str]]]

    def text(self, key: str) -> str:
        if key in self.memories:
            return self.memories[key]
        for paragraphs in self.documents.values():
            if key in paragraphs:
                return paragraphs[key]
        raise KeyError(key)

    def fill(self, store: Any, folder: Path) -> None:
        """Store the memories and ingest the documents (written as files into ``folder``)."""
        from .ingest import ingest

        store.add_many(list(self.memories.values()), collection="memories")
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for name, paragraphs in self.documents.items():
            path = folder / name
            body = "\n\n".join(paragraphs.values())
            if path.suffix == ".html":
                body = "<html><body>" + "".join(f"<p>{p}</p>" for p in paragraphs.values()) + "</body></html>"
            path.write_text(body, encoding="utf-8")
            files.append(path)
        ingest(files, store)


@dataclass(frozen=True)
class RecallResult:
    k: int
    recall: float
    queries: int
    misses: list[str] = field(default_factory=list)


def load(path: str | Path) -> LabelledSet:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return LabelledSet(data["memories"], data["documents"], [(q, list(keys)) for q, keys in data["queries"]])


def recall_at_k(store: Any, labelled: LabelledSet, k: int = 5) -> RecallResult:
    """The share of queries with a relevant entry among the first ``k`` hits (collection ``all``)."""
    misses = []
    for query, keys in labelled.queries:
        wanted = [labelled.text(key) for key in keys]
        hits = store.search(query, k=k, collection="all")
        if not any(text in hit.text for hit in hits for text in wanted):
            misses.append(query)
    total = len(labelled.queries)
    return RecallResult(k, (total - len(misses)) / max(1, total), total, misses)
