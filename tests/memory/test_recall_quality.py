"""Retrieval quality: recall@5 on the small labelled set of bench/data/memory_recall.json."""

from __future__ import annotations

from pathlib import Path

from llmos.memory.disk import DiskStore
from llmos.memory.labelled import load, recall_at_k

SET = Path(__file__).resolve().parents[2] / "bench" / "data" / "memory_recall.json"


def test_recall_at_5_on_the_labelled_set(tmp_path):
    labelled = load(SET)
    assert len(labelled.queries) >= 30
    with DiskStore(tmp_path / "chroma") as store:
        labelled.fill(store, tmp_path / "docs")
        assert store.count("documents") == len(labelled.documents)  # short files: one chunk each
        result = recall_at_k(store, labelled, k=5)
        at_1 = recall_at_k(store, labelled, k=1)
    print(f"recall@5 {result.recall:.2f}, recall@1 {at_1.recall:.2f}; missed at 1: {at_1.misses}")
    assert result.recall >= 0.9, result.misses
    assert at_1.recall <= result.recall
