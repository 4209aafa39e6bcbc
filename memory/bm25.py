"""A small in-memory BM25 (Okapi) keyword index with incremental add and remove.

Keyword ranking complements vector similarity: exact words such as names, codes and numbers
("4821", "Oslo") that an embedding blurs. The index keeps an inverted list per term, so a query
touches only the documents that share a term with it.

    index = BM25Index()
    index.add("a1", "my bike lock code is 4821")
    index.search("bike lock", k=5)   # [("a1", 1.23)]
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["BM25Index", "tokenize"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# Common English function words: they match everything and rank nothing.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves""".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords; a trailing plural 's' is dropped (locks -> lock)."""
    out = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


class BM25Index:
    """Okapi BM25 over documents identified by string ids (k1=1.5, b=0.75)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._postings: dict[str, dict[str, int]] = {}
        self._lengths: dict[str, int] = {}
        self._terms: dict[str, tuple[str, ...]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._lengths

    def add(self, doc_id: str, text: str) -> None:
        """Index ``text`` under ``doc_id`` (replacing what that id had)."""
        if doc_id in self._lengths:
            self.remove(doc_id)
        counts = Counter(tokenize(text))
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[doc_id] = tf
        length = sum(counts.values())
        self._lengths[doc_id] = length
        self._terms[doc_id] = tuple(counts)
        self._total_length += length

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        for doc_id, text in items:
            self.add(doc_id, text)

    def remove(self, doc_id: str) -> bool:
        """Drop ``doc_id``; False when it was not indexed."""
        length = self._lengths.pop(doc_id, None)
        if length is None:
            return False
        self._total_length -= length
        for term in self._terms.pop(doc_id, ()):
            posting = self._postings.get(term)
            if posting is not None:
                posting.pop(doc_id, None)
                if not posting:
                    del self._postings[term]
        return True

    def clear(self) -> None:
        self._postings.clear()
        self._lengths.clear()
        self._terms.clear()
        self._total_length = 0

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best (id, score) pairs, best first; documents sharing no term are left out."""
        n = len(self._lengths)
        terms = set(tokenize(query))
        if not n or not terms or k <= 0:
            return []
        average = self._total_length / n or 1.0
        k1, b = self.k1, self.b
        scores: dict[str, float] = {}
        lengths = self._lengths
        for term in terms:
            posting = self._postings.get(term)
            if not posting:
                continue
            df = len(posting)
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            norm = k1 * (1.0 - b)
            scale = k1 * b / average
            for doc_id, tf in posting.items():
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf * (k1 + 1.0) / (
                    tf + norm + scale * lengths[doc_id]
                )
        return heapq.nlargest(k, scores.items(), key=lambda item: (item[1], item[0]))
