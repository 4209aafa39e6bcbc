"""Ingest what people keep: text by content, the container formats, folders, sections, sync."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest

from llmos.memory.chunking import chunk_sections, iter_paragraphs, iter_sections, mark_headings
from llmos.memory.disk import DiskStore
from llmos.memory.embedder import default_embedder
from llmos.memory.folders import walk
from llmos.memory.formats import kind_of
from llmos.memory.ingest import IngestError, ingest, iter_sectioned
from llmos.memory.watch import FolderWatch


@pytest.fixture(scope="module")
def embedder():
    return default_embedder()


@pytest.fixture()
def store(tmp_path: Path, embedder):
    s = DiskStore(tmp_path / "chroma", embedder=embedder)
    yield s
    s.close()


def sources(store: DiskStore) -> set[str]:
    got = store._collection("documents").get(include=["metadatas"])
    return {Path(m["source"]).name for m in got["metadatas"]}


TEXTS = {
    "README": "Kestrel\n=======\n\nKestrel is a tool that sorts bird photographs by species.\n",
    "LICENSE": "Permission is hereby granted, free of charge, to any person obtaining a copy.\n",
    "notes.2": "The second draft moved the harbour chapter before the storm.\n",
    "guide.rst": "Setup\n-----\n\nRun the installer twice when the first run stops.\n",
    "plan.org": "* Garden\n** Tomatoes\nWater them every morning in July.\n",
    "paper.tex": "\\section{Results}\nThe muon lifetime came out at 2.2 microseconds.\n",
    "prices.csv": "item,price\nrye bread,3.20\noat milk,1.90\n",
    "config.json": '{"theme": "dark", "font_size": 14}\n',
    "deploy.yaml": "server:\n  port: 8177\n  host: 127.0.0.1\n",
    "tool.py": "def area(radius):\n    return 3.14159 * radius ** 2\n",
}


def test_text_is_known_by_its_content_whatever_its_name(tmp_path: Path, store: DiskStore):
    for name, text in TEXTS.items():
        (tmp_path / name).write_text(text)
    assert {kind_of(tmp_path / name) for name in TEXTS} == {"text"}
    report = ingest([tmp_path / name for name in TEXTS], store)
    assert report.errors == {} and len(report.files) == len(TEXTS)
    assert sources(store) == set(TEXTS)
    hit = store.search("muon lifetime", k=1, collection="documents")[0]
    assert Path(hit.metadata["source"]).name == "paper.tex" and hit.metadata["section"] == "Results"
    assert store.search("tomatoes watering", k=1, collection="documents")[0].metadata["section"] == "Garden > Tomatoes"


def _docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Tenancy agreement", level=1)
    document.add_heading("Deposit", level=2)
    document.add_paragraph("The deposit of 900 euros is returned within 30 days of moving out.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Rent", "750 euros"
    document.save(str(path))


def _odt(path: Path) -> None:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="Choir schedule"))
    document.text.addElement(P(text="Rehearsals are on Thursday evenings in the old library."))
    document.save(str(path))


def _epub(path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("llmos-test")
    book.set_title("Sea stories")
    book.set_language("en")
    chapter = epub.EpubHtml(title="The lighthouse", file_name="ch1.xhtml", lang="en")
    chapter.content = "<h1>The lighthouse</h1><p>The keeper lit the lamp at dusk every day for forty years.</p>"
    book.add_item(chapter)
    book.toc = [chapter]
    book.spine = [chapter]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(path), book)


def _eml(path: Path) -> None:
    message = EmailMessage()
    message["Subject"] = "Flight booking"
    message["From"] = "travel@example.org"
    message["To"] = "me@example.org"
    message.set_content("Your flight to Bergen leaves at 07:45 from gate 12.")
    message.add_attachment(b"%PDF-1.4 ticket", maintype="application", subtype="pdf", filename="ticket.pdf")
    path.write_bytes(bytes(message))


@pytest.mark.parametrize(("name", "make", "kind", "query", "expected", "section"), [
    ("lease.docx", _docx, "docx", "when is the deposit returned", "within 30 days", "Tenancy agreement > Deposit"),
    ("choir.odt", _odt, "odt", "when are rehearsals", "Thursday evenings", "Choir schedule"),
    ("stories.epub", _epub, "epub", "when did the keeper light the lamp", "at dusk", "The lighthouse"),
    ("booking.eml", _eml, "eml", "when does the flight leave", "07:45", "Flight booking"),
])
def test_office_books_and_mail_are_read_through_their_libraries(tmp_path, store, name, make, kind, query,
                                                                expected, section):
    path = tmp_path / name
    make(path)
    assert kind_of(path) == kind
    report = ingest([path], store)
    assert report.files[str(path)] >= 1
    hit = store.search(query, k=1, collection="documents")[0]
    assert expected in hit.text and hit.metadata["format"] == kind
    assert hit.metadata["section"] == section and hit.text.startswith(section + "\n\n")


def test_a_misnamed_container_is_read_by_its_content(tmp_path, store):
    _docx(tmp_path / "lease.txt")
    assert kind_of(tmp_path / "lease.txt") == "docx"
    (tmp_path / "report.docx").write_text("plain words, not a Word file")
    with pytest.raises(IngestError, match="not a docx file"):
        kind_of(tmp_path / "report.docx")


def test_chunks_follow_headings_and_carry_their_path():
    text = (
        "# Terms\n\nThese terms apply to every order.\n\n"
        "## Returns\n\nItems can be sent back.\n\n"
        "3.2 Refunds\n\nA refund is paid within 30 days.\n\n"
        "## Shipping\n\nParcels leave on Mondays.\n"
    )
    pieces = mark_headings(line + "\n" for line in text.split("\n"))
    chunks = list(chunk_sections(iter_sections(iter_paragraphs(pieces))))
    assert chunks == [
        ("Terms", "Terms\n\nThese terms apply to every order."),
        ("Terms > Returns", "Terms > Returns\n\nItems can be sent back."),
        ("Terms > Returns > 3.2 Refunds", "Terms > Returns > 3.2 Refunds\n\nA refund is paid within 30 days."),
        ("Terms > Shipping", "Terms > Shipping\n\nParcels leave on Mondays."),
    ]


def test_underlined_titles_take_levels_in_order_of_use_and_rules_are_not_text(tmp_path):
    path = tmp_path / "notes"
    path.write_text("Manual\n======\n\nIntro.\n\nInstall\n-------\n\nRun make.\n\n----\n\nMore install words.\n\n"
                    "Usage\n-----\n\nRun llmos.\n")
    assert [s for s, _ in iter_sectioned(path)] == ["Manual", "Manual > Install", "Manual > Usage"]
    assert all("----" not in chunk for _, chunk in iter_sectioned(path))


def test_a_folder_is_walked_honouring_gitignore_and_skipping_hidden_files(tmp_path):
    (tmp_path / ".gitignore").write_text("build/\n*.log\n!keep.log\n")
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    (tmp_path / "docs" / ".gitignore").write_text("draft-*\n")
    for name in ("a.md", "keep.log", "run.log", "build/out.txt", "docs/deep/b.txt", "docs/draft-1.txt",
                 ".hidden/c.txt", "docs/.secret"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("words\n")
    found = [p.relative_to(tmp_path).as_posix() for p in walk(tmp_path)]
    assert found == ["a.md", "docs/deep/b.txt", "keep.log"]


def test_a_folder_ingest_skips_binaries_and_huge_files_with_one_line_each_and_goes_on(tmp_path, store, monkeypatch):
    from llmos.memory import formats

    tmp_path = tmp_path / "docs"
    tmp_path.mkdir()
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + os.urandom(512))
    (tmp_path / "tool").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(300))
    (tmp_path / "huge.txt").write_text("big " * 5000)
    (tmp_path / "notes.txt").write_text("The spare key is under the blue flowerpot.\n")
    monkeypatch.setattr(formats, "MAX_FILE_BYTES", 10_000)
    report = ingest([tmp_path], store)
    assert list(report.files) == [str(tmp_path / "notes.txt")]
    assert set(report.skipped) == {str(tmp_path / n) for n in ("photo.jpg", "tool", "huge.txt")}
    assert all("\n" not in why for why in report.skipped.values())
    assert "binary" in report.skipped[str(tmp_path / "tool")] and "too big" in report.skipped[str(tmp_path / "huge.txt")]


def test_an_unchanged_file_is_skipped_and_a_changed_one_replaces_its_chunks(tmp_path, store):
    path = tmp_path / "diary"
    path.write_text("Monday: the boiler was fixed.\n")
    assert ingest([path], store).files == {str(path): 1}
    again = ingest([path], store)
    assert again.files == {} and again.unchanged == [str(path)]
    path.write_text("Monday: the boiler was fixed.\n\n" + "Tuesday: the roof was checked. " * 40 + "\n")
    changed = ingest([path], store)
    assert changed.files[str(path)] == store.count("documents") >= 2  # no duplicates of the old chunk
    assert "roof" in store.search("roof", k=1, collection="documents")[0].text


def test_the_watch_adds_updates_and_forgets(tmp_path, store):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("The garage code is 4471.\n")
    watch = FolderWatch(store, [folder])
    first = watch.scan()
    assert list(first.added) == [str(folder / "a.txt")]
    assert not watch.scan()  # nothing changed: nothing read
    (folder / "b.md").write_text("# Plants\n\nThe fern needs shade.\n")
    (folder / "a.txt").write_text("The garage code is now 9902.\n")
    second = watch.scan()
    assert list(second.added) == [str(folder / "b.md")] and list(second.updated) == [str(folder / "a.txt")]
    assert "9902" in store.search("garage code", k=1, collection="documents")[0].text
    (folder / "a.txt").unlink()
    third = watch.scan()
    assert third.removed == [str(folder / "a.txt")] and sources(store) == {"b.md"}


def test_cli_watch_ingests_a_new_file_and_stops_on_sigterm(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "first.txt").write_text("The first note.\n")
    env = {**os.environ, "LLMOS_DATA_DIR": str(tmp_path / "data"), "LLMOS_CONFIG": str(tmp_path / "none.toml")}
    child = subprocess.Popen([sys.executable, "-m", "llmos.app.cli", "memory", "add", "--watch", "--interval", "0.2",
                              str(folder)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
    seen: list[str] = []
    timer = threading.Timer(240, child.kill)  # only a hang reaches it
    timer.start()
    try:
        for line in child.stderr:
            seen.append(line)
            if line.startswith("added ") and "first.txt" in line:
                (folder / "second.txt").write_text("The second note.\n")
            if line.startswith("added ") and "second.txt" in line:
                child.terminate()
        child.wait(60)
    finally:
        timer.cancel()
    text = "".join(seen)
    assert child.returncode == 0, text
    assert "watching " in text and "second.txt (1 chunks)" in text and text.rstrip().endswith("stopped watching")


def test_cli_add_reports_skipped_files_in_one_line_each(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "LICENSE").write_text("Permission is hereby granted.\n")
    (folder / "blob").write_bytes(b"\x00\x01\x02" * 100)
    env = {**os.environ, "LLMOS_DATA_DIR": str(tmp_path / "data"), "LLMOS_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run([sys.executable, "-m", "llmos.app.cli", "memory", "add", str(folder)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"llmos: skipped {folder / 'blob'}: a binary file, not text"
    assert lines[1].startswith("added 1 chunks from 1 file(s)")
    again = subprocess.run([sys.executable, "-m", "llmos.app.cli", "memory", "add", str(folder / "LICENSE")],
                           capture_output=True, text=True, env=env, timeout=240)
    assert again.returncode == 0 and "added 0 chunks from 0 file(s), 1 unchanged" in again.stderr
