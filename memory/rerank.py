"""Passages for a question about the user's documents: rerank, merge neighbours, fit a budget.

The hybrid search (:meth:`llmos.memory.disk.DiskStore.search`) brings ``CANDIDATES`` chunks;
:func:`rerank` scores each again against the question with two signals that are cheap on two
cores (the kernel model scoring relevance, or MiniLM over every candidate, costs ~100 ms a
chunk there):

- ``vector``: the cosine of the question and the chunk with the documents' own embedder (the
  static table: microseconds a chunk);
- ``lexical``: how much of the question's content words the chunk holds (its heading path and
  its file's name included), each word weighted by its rarity among the candidates (an IDF over them), so a
  word every candidate has counts for little and the one that names the clause counts most.

- ``fused``: the hybrid search's own RRF score, relative to the best candidate's.

``score = vector + LEXICAL_WEIGHT * lexical + FUSED_WEIGHT * fused``. :func:`merge` joins chunks of one file and one
section that follow each other when both were kept, so a clause cut at a chunk boundary comes
back whole; :func:`fit` keeps the best passages that fit the budget. A question is taken as
about the documents (:func:`about_documents`) when a kept passage holds at least ``TOPIC_FLOOR``
of its content words, or when it names a passage's file: "hello" brings no passage, whatever its
cosine. The weights and floor were chosen on ``bench/data/docqa_tuning.json`` (texts the benchmark's
question set does not use).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .bm25 import tokenize
from .chunking import without_heading

__all__ = ["CANDIDATES", "Passage", "TOPIC_FLOOR", "about_documents", "content_words", "fit", "merge", "rerank",
           "select"]

CANDIDATES = 20  # chunks the hybrid search brings for the rerank
KEEP = 5  # passages kept after the rerank, before merging and the budget
LEXICAL_WEIGHT = 0.25
FUSED_WEIGHT = 1.0
RELATIVE = 0.7  # a passage scoring under this share of the best one is left out
TOPIC_FLOOR = 0.3  # the share of the question's content words a passage must hold

# words of a question that say how it is asked, not what it is about
QUESTION_WORDS = frozenset(
    """according answer ask called call does get give given kind many may much must name named
    say says said tell term text title way whether""".split())


def content_words(text: str) -> list[str]:
    """The question's words that say what it is about (stopwords and question words dropped)."""
    return [word for word in tokenize(text) if word not in QUESTION_WORDS]


@dataclass(frozen=True)
class Passage:
    """Consecutive chunks of one file and one section, with their rerank score."""

    source: str
    section: str
    chunks: tuple[int, ...]
    text: str  # the chunks' text; the first chunk's heading line kept, the others' dropped
    score: float
    vector: float = 0.0
    lexical: float = 0.0
    ids: tuple[str, ...] = field(default=())
    names_file: bool = False  # the question names this passage's file ("according to my lease")

    @property
    def metadata(self) -> dict[str, Any]:
        return {"source": self.source, "section": self.section, "chunk": self.chunks[0]}


def rerank(query: str, hits: Sequence[Any], vectors: Any, query_vector: Any) -> list[Passage]:
    """``hits`` (document chunks) as passages, best first. ``vectors`` are the chunks' embeddings
    and ``query_vector`` the question's, from one embedder (unit length)."""
    import numpy as np

    if not hits:
        return []
    from pathlib import PurePath

    words = set(content_words(query))
    names = [set(tokenize(PurePath(str(hit.metadata.get("source", ""))).name)) for hit in hits]
    holding = [set(tokenize(hit.text)) | name for hit, name in zip(hits, names)]
    n = len(hits)
    idf = {w: math.log(1.0 + (n + 0.5) / (sum(w in h for h in holding) + 0.5)) for w in words}
    total = sum(idf.values())
    cosines = np.asarray(vectors, dtype=np.float32) @ np.asarray(query_vector, dtype=np.float32)
    top = max(hit.score for hit in hits) or 1.0
    passages = []
    for hit, held, name, cosine in zip(hits, holding, names, cosines):
        lexical = sum(weight for w, weight in idf.items() if w in held) / total if total else 0.0
        meta = hit.metadata
        score = float(cosine) + LEXICAL_WEIGHT * lexical + FUSED_WEIGHT * hit.score / top
        passages.append(Passage(
            str(meta.get("source", "")), str(meta.get("section", "") or ""), (int(meta.get("chunk", 0)),),
            hit.text, score, float(cosine), lexical, (hit.id,), bool(words & name)))
    passages.sort(key=lambda p: -p.score)
    return passages


def merge(passages: Sequence[Passage]) -> list[Passage]:
    """Passages of one file and section whose chunks follow each other, joined (best first)."""
    ordered = sorted(passages, key=lambda p: (p.source, p.section, p.chunks[0]))
    merged: list[Passage] = []
    for passage in ordered:
        last = merged[-1] if merged else None
        if last is not None and (last.source, last.section) == (passage.source, passage.section) \
                and passage.chunks[0] == last.chunks[-1] + 1:
            merged[-1] = Passage(
                last.source, last.section, last.chunks + passage.chunks,
                last.text + "\n\n" + without_heading(passage.text, passage.section), max(last.score, passage.score),
                max(last.vector, passage.vector), max(last.lexical, passage.lexical), last.ids + passage.ids,
                last.names_file or passage.names_file)
        else:
            merged.append(passage)
    merged.sort(key=lambda p: -p.score)
    return merged


def fit(texts: Sequence[str], budget_chars: int) -> list[tuple[int, str]]:
    """``(index, text)`` of the texts, best first, that fit ``budget_chars`` together; a text that
    does not fit is passed over for shorter ones after it; when not even the first fits, it is
    cut at a word."""
    kept: list[tuple[int, str]] = []
    used = 0
    for index, text in enumerate(texts):
        if used + len(text) <= budget_chars:
            kept.append((index, text))
            used += len(text)
        elif not kept:
            cut = text[: max(0, budget_chars - 3)].rsplit(" ", 1)[0]
            if cut:
                kept.append((index, cut + "..."))
                used += len(cut) + 3
    return kept


def select(passages: Sequence[Passage], keep: int = KEEP) -> list[Passage]:
    """The best ``keep`` passages (those within ``RELATIVE`` of the best), neighbours merged."""
    if not passages:
        return []
    best = passages[0].score
    chosen = [p for p in passages[:keep] if p.score >= RELATIVE * best]
    return merge(chosen)


def about_documents(passages: Sequence[Passage]) -> bool:
    """Is the question about the documents: does it name a passage's file, or does a passage
    hold enough of its content words?"""
    return any(p.names_file or p.lexical >= TOPIC_FLOOR for p in passages)
