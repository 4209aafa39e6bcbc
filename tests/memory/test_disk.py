"""The chromadb "disk": DiskStore (hybrid search, forget, stats, corrupt stores) and ingest.

Real chromadb on tmp_path and the real ONNX embedding model throughout.
"""

from __future__ import annotations

import heapq
import math
import os
import random
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from llmos.memory.bm25 import BM25Index, tokenize
from llmos.memory.disk import DiskStore, StoreError
from llmos.memory.embedder import default_embedder
from llmos.memory.ingest import IngestError, IngestProgress, chunk_paragraphs, ingest, iter_chunks

FACTS = [
    "my bike lock code is 4821",
    "the dentist appointment is on Tuesday at 3 pm",
    "my sister Alice lives in Oslo",
    "the wifi password at the cabin is heron-42",
    "I am allergic to peanuts",
    "the car needs new winter tyres before November",
]


@pytest.fixture()
def store(tmp_path: Path):
    s = DiskStore(tmp_path / "chroma", embedder=default_embedder())
    yield s
    s.close()


@pytest.fixture()
def filled(store: DiskStore) -> tuple[DiskStore, dict[str, str]]:
    ids = {fact: store.remember(fact, process=7, conversation="c-1") for fact in FACTS}
    return store, ids


# --- DiskStore ---------------------------------------------------------------------------------


def test_remember_stores_text_and_metadata(filled) -> None:
    store, ids = filled
    hit = store.get(ids["my bike lock code is 4821"])
    assert hit is not None and hit.text == "my bike lock code is 4821"
    meta = hit.metadata
    assert meta["source"] == "user" and meta["kind"] == "memory" and meta["provenance"] == "trusted"
    assert meta["process"] == 7 and meta["conversation"] == "c-1" and meta["created"] > 1.6e9
    untrusted = store.remember("Paris is in France", source="web", provenance="untrusted", kind="fact")
    assert store.get(untrusted).metadata["provenance"] == "untrusted"
    with pytest.raises(ValueError):
        store.remember("x", provenance="maybe")
    with pytest.raises(ValueError):
        store.remember("   ")


def test_search_finds_paraphrases_and_exact_keywords(filled) -> None:
    store, ids = filled
    hits = store.search("what is the combination of my bicycle padlock?", k=3)
    assert hits[0].id == ids["my bike lock code is 4821"]
    assert hits[0].similarity is not None and hits[0].similarity > 0.4
    # a bare code: the embedding barely knows it, BM25 does
    assert store.search("heron-42", k=1)[0].text == "the wifi password at the cabin is heron-42"
    assert store.search("4821", k=1)[0].id == ids["my bike lock code is 4821"]
    scores = [h.score for h in store.search("where does my sister live", k=5)]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    assert store.search("", k=3) == []


def test_forget_removes_from_vector_and_keyword_search(filled) -> None:
    store, ids = filled
    target = ids["my bike lock code is 4821"]
    store.search("4821")  # the BM25 index exists now and must be kept in step
    assert store.forget(target) is True
    assert store.forget(target) is False
    assert store.get(target) is None
    assert all(h.id != target for h in store.search("4821 bike lock code", k=6))
    assert store.stats()["collections"]["memories"] == len(FACTS) - 1


def test_store_persists_and_keyword_index_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "chroma"
    with DiskStore(path) as first:
        wanted = first.remember("the spare key is under the blue flowerpot")
        first.remember("tomatoes need watering every evening")
    with DiskStore(path) as second:
        assert second.count() == 2
        assert second.search("flowerpot", k=1)[0].id == wanted


def test_keyword_index_follows_writes_from_another_store(tmp_path: Path) -> None:
    path = tmp_path / "chroma"
    a = DiskStore(path)
    b = DiskStore(path)
    try:
        a.remember("the boiler service is due in March")
        assert a.search("zanzibar", k=1)[0].text.startswith("the boiler")  # builds a's index
        new = b.remember("we honeymooned in Zanzibar")
        keyword_hits = a._index("memories").search("zanzibar")
        assert [doc for doc, _ in keyword_hits] == [new]
        old = a.search("boiler", k=1)[0].id
        b.forget(old)
        assert old not in a._index("memories")
    finally:
        a.close()
        b.close()


def test_search_in_documents_and_all(store: DiskStore) -> None:
    memory = store.remember("my favourite colour is green")
    doc = store.add_many(["The mitochondria is the powerhouse of the cell."],
                         [{"source": "/tmp/bio.txt", "kind": "document", "provenance": "untrusted"}],
                         collection="documents")[0]
    assert [h.id for h in store.search("powerhouse of the cell", k=1, collection="documents")] == [doc]
    both = {h.id: h.collection for h in store.search("cell colour", k=5, collection="all")}
    assert both == {memory: "memories", doc: "documents"}
    with pytest.raises(ValueError):
        store.search("x", collection="nope")
    stats = store.stats()
    assert stats["collections"] == {"memories": 1, "documents": 1} and stats["bytes"] > 0


def test_a_corrupt_store_gives_one_line_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "chroma"
    with DiskStore(path) as good:
        good.remember("something")
    sqlite = path / "chroma.sqlite3"
    assert sqlite.is_file()
    sqlite.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreError) as info:
        DiskStore(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_a_store_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-folder"
    path.write_text("hello")
    with pytest.raises(StoreError, match="not a folder"):
        DiskStore(path)


def test_bm25_ranks_and_removes() -> None:
    index = BM25Index()
    index.add("a", "red apples and green apples")
    index.add("b", "a red car")
    index.add("c", "blue sky")
    assert [d for d, _ in index.search("apple")] == ["a"]
    assert [d for d, _ in index.search("red apples")][0] == "a"
    assert index.remove("a") and not index.remove("a")
    assert [d for d, _ in index.search("red")] == ["b"]
    assert tokenize("The Locks of THE door") == ["lock", "door"]


def _reference_bm25(documents: dict[str, str], query: str, k: int = 10, k1: float = 1.5,
                     b: float = 0.75) -> list[tuple[str, float]]:
    """BM25 written out plainly over a dict of documents: what BM25Index must match."""
    counts = {doc_id: Counter(tokenize(text)) for doc_id, text in documents.items()}
    n = len(counts)
    terms = set(tokenize(query))
    if not n or not terms or k <= 0:
        return []
    average = sum(sum(c.values()) for c in counts.values()) / n or 1.0
    scores: dict[str, float] = {}
    for term in terms:
        df = sum(1 for c in counts.values() if term in c)
        if not df:
            continue
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        for doc_id, c in counts.items():
            if term in c:
                tf, length = c[term], sum(c.values())
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf * (k1 + 1.0) / (
                    tf + k1 * (1.0 - b) + k1 * b * length / average)
    return heapq.nlargest(k, scores.items(), key=lambda item: (item[1], item[0]))


def test_bm25_matches_the_plain_formula_through_adds_removes_and_replacements() -> None:
    rng = random.Random(7)
    words = "apple pear plum kiwi lime fig date melon grape berry cherry lemon".split()
    index, documents = BM25Index(), {}
    for step in range(600):
        doc_id = f"d{rng.randrange(150)}"
        if doc_id in documents and rng.random() < 0.3:
            assert index.remove(doc_id)
            del documents[doc_id]
        else:  # a new document, or new text for an old id
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
            index.add(doc_id, text)
            documents[doc_id] = text
        if step % 50 == 49:
            for query in ("apple", "plum kiwi", "fig date melon", "cherry lemon lime grape", "nothing here"):
                got, want = index.search(query, 7), _reference_bm25(documents, query, 7)
                # the same scores; the same documents, but for ties (equal to the last ulp) at the cut
                assert [round(x, 9) for _, x in got] == [round(x, 9) for _, x in want], query
                last = round(want[-1][1], 9) if want else None
                assert ({d for d, x in got if round(x, 9) != last}
                        == {d for d, x in want if round(x, 9) != last}), query
    assert len(index) == len(documents)


# --- ingest ------------------------------------------------------------------------------------


def _pdf(path: Path, pages: list[str]) -> None:
    """A minimal valid PDF with one line of Helvetica text per page."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for i, text in enumerate(pages):
        page_no, content_no = 3 + 2 * i + 1, 3 + 2 * i + 2
        kids.append(f"{page_no} 0 R")
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_no} 0 R >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objects.insert(2, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


def test_chunking_respects_paragraphs() -> None:
    paragraphs = ["short one", "short two", "x" * 500, "y " * 300 + "end.", "tail"]
    chunks = list(chunk_paragraphs(paragraphs, limit=800))
    assert chunks[0] == "short one\n\nshort two\n\n" + "x" * 500
    assert all(len(c) <= 800 for c in chunks)
    assert chunks[-1].endswith("tail")
    long_sentences = " ".join(f"Sentence {i} ends here." for i in range(200))
    pieces = list(chunk_paragraphs([long_sentences], limit=800))
    assert all(p.endswith(".") and len(p) <= 800 for p in pieces)
    assert " ".join(pieces) == long_sentences


def test_ingest_text_markdown_html_and_pdf(store: DiskStore, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Grocery list: oat milk, rye bread.\n\nCall the plumber on Monday.\n")
    (tmp_path / "guide.md").write_text("# Sourdough\n\n" + "\n\n".join(
        f"Step {i}: fold the dough and let it rest for {i * 10} minutes." for i in range(1, 40)))
    (tmp_path / "page.html").write_text(
        "<html><head><title>Lighthouses</title><script>var tracking = 1;</script><style>p{}</style></head>"
        "<body><h1>Norwegian lighthouses</h1><p>The Lindesnes lighthouse is the\noldest in Norway.</p>"
        "<p>It was first lit in 1656.</p></body></html>")
    _pdf(tmp_path / "paper.pdf", ["Quantum tunnelling lets particles cross barriers.", "Page two about muons."])
    seen: list[IngestProgress] = []
    report = ingest([tmp_path / n for n in ("notes.txt", "guide.md", "page.html", "paper.pdf")], store,
                    progress=seen.append)
    assert report.chunks == store.count("documents") and report.chunks >= 5
    assert report.files[str(tmp_path / "guide.md")] >= 3  # ~2,400 characters
    assert seen[-1].done and seen[-1].file_index == seen[-1].files == 4
    html = store.search("oldest lighthouse in Norway", k=1, collection="documents")[0]
    assert "Lindesnes lighthouse is the oldest in Norway" in html.text
    assert "tracking" not in html.text and "p{}" not in html.text
    assert html.metadata["provenance"] == "untrusted" and html.metadata["source"] == str(tmp_path / "page.html")
    pdf = store.search("particles crossing barriers", k=1, collection="documents")[0]
    assert "Quantum tunnelling" in pdf.text and pdf.metadata["format"] == "pdf"
    assert store.search("plumber", k=1, collection="documents")[0].metadata["chunk"] == 0


def test_reingesting_a_file_replaces_its_chunks(store: DiskStore, tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first version about kites\n")
    ingest([path], store)
    path.write_text("second version about balloons\n")
    ingest([path], store)
    assert store.count("documents") == 1
    assert "balloons" in store.search("kites", k=1, collection="documents")[0].text


def test_binary_empty_and_unsupported_files_are_refused(store: DiskStore, tmp_path: Path) -> None:
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(256))
    (tmp_path / "empty.md").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    (tmp_path / "fake.pdf").write_text("not really a pdf")
    (tmp_path / "data.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    with zipfile.ZipFile(tmp_path / "backup.zip", "w") as zf:
        zf.writestr("photo.jpg", os.urandom(64))
    (tmp_path / "good.txt").write_text("a good file\n")
    cases = {"image.txt": "binary", "empty.md": "empty", "blank.txt": "no text", "fake.pdf": "not a PDF",
             "data.bin": "binary", "backup.zip": "an archive", "missing.txt": "no such file"}
    for name, words in cases.items():
        with pytest.raises(IngestError, match=words) as info:
            ingest([tmp_path / "good.txt", tmp_path / name], store)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value) and name in str(info.value)
    # refused before anything was stored (the blank file is found only while reading: rolled back)
    assert store.count("documents") <= 1
    report = ingest([tmp_path / "good.txt", tmp_path / "image.txt"], store, errors="skip")
    assert list(report.errors) == [str(tmp_path / "image.txt")] and store.count("documents") == 1
    assert str(tmp_path / "good.txt") in [*report.files, *report.unchanged]  # stored once, new or unchanged


def test_a_large_file_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    rng = random.Random(7)
    words = "memory kernel device process scheduler chroma vector paragraph sentence token".split()
    with path.open("w") as f:
        while f.tell() < 5_000_000:
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) + ". "
            f.write(sentence * rng.randint(1, 6) + ("\n\n" if rng.random() < 0.5 else "\n"))
        f.write("x" * 300_000 + "\n")  # one enormous line, too
    size = path.stat().st_size
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        chunks = 0
        characters = 0
        for chunk in iter_chunks(path):
            chunks += 1
            characters += len(chunk)
            assert len(chunk) <= 800
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert chunks > 5_000_000 / 800
    assert characters > 0.9 * size
    assert peak < size / 20, f"peak {peak} bytes for a {size}-byte file"  # measured ~175 kB for 5.3 MB


def test_latin1_text_is_read_as_latin1(tmp_path: Path) -> None:
    path = tmp_path / "menu.txt"
    path.write_bytes("Café crème brûlée\n\nSecond paragraph.\n".encode("latin-1"))
    assert list(iter_chunks(path)) == ["Café crème brûlée\n\nSecond paragraph."]
