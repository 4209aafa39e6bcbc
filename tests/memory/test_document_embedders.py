"""Per-collection embedders: documents on the static embedder (the default) or MiniLM, memories on
MiniLM, and a store whose documents were embedded by the other one migrated on open.

Real chromadb on tmp_path, the real MiniLM model and the real static table throughout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from llmos.kernel.config import ConfigError, load_config
from llmos.kernel.devices import Untrusted
from llmos.memory.disk import DEFAULT_DOCUMENT_EMBEDDER, DiskStore
from llmos.memory.embedder import default_embedder
from llmos.memory.ingest import ingest
from llmos.memory.pager import DiskPager
from llmos.memory.static_embedder import default_static_embedder

BOAT = ("# Boat trip\n\nThe ferry to Bergen leaves at 07:40 from pier 3.\n\n"
        "Tickets cost 450 kroner and must be bought the day before at the harbour office.\n")
GARDEN = "Water the tomatoes every morning.\n\nThe roses need pruning in March.\n"
LEASE = ("Either party may end the lease with three months' written notice.\n\n"
         "The deposit of 24,000 kroner is held in a separate bank account.\n")


def _files(tmp_path: Path) -> list[Path]:
    files = []
    for name, text in (("boat-trip.md", BOAT), ("garden.txt", GARDEN), ("lease.txt", LEASE)):
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    return files


def _entries(store: DiskStore, collection: str) -> dict[str, tuple[str, dict]]:
    got = store._collection(collection).get(include=["documents", "metadatas"])
    return {i: (d, dict(m)) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}


def test_static_is_the_default_for_documents_and_memories_keep_minilm(tmp_path: Path) -> None:
    assert DEFAULT_DOCUMENT_EMBEDDER == "static" == load_config().document_embedder
    with DiskStore(tmp_path / "chroma") as store:
        assert store.kinds == {"memories": "minilm", "documents": "static"}
        assert store.embedder_for("documents") is default_static_embedder()
        assert store.embedder_for("memories") is default_embedder()
        assert store.stats()["embedders"]["documents"].startswith("static")
    with pytest.raises(ValueError, match="document_embedder"):
        DiskStore(tmp_path / "other", document_embedder="bert")


def test_the_config_key_is_checked(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.toml", env={"LLMOS_DOCUMENT_EMBEDDER": "minilm"}).document_embedder == "minilm"
    with pytest.raises(ConfigError, match="document_embedder"):
        load_config(tmp_path / "none.toml", env={"LLMOS_DOCUMENT_EMBEDDER": "word2vec"})


def test_a_static_document_store_ingests_and_answers_with_the_source_named(tmp_path: Path) -> None:
    store_path = tmp_path / "chroma"
    files = _files(tmp_path)
    with DiskStore(store_path) as store:
        report = ingest(files, store)
        assert report.chunks == 3
        store.remember("the user gets seasick on ferries")
        hits = store.search("what time is the boat to Bergen", k=1, collection="documents")
        assert hits and "07:40" in hits[0].text and hits[0].metadata["source"] == str(files[0])
        vector = store._collection("documents").get(ids=[hits[0].id], include=["embeddings"])["embeddings"][0]
        assert len(vector) == default_static_embedder().dimensions  # stored with the static vectors
    passages = [t for t in DiskPager(store_path).page_in("c1", "How much is the deposit for the flat?", 1000)
                if isinstance(t, Untrusted)]
    assert passages and passages[0].value.startswith("From the file lease.txt: ") and "24,000" in passages[0].value


def test_an_old_minilm_documents_collection_is_migrated_without_losing_entries(tmp_path: Path, caplog) -> None:
    path = tmp_path / "chroma"
    files = _files(tmp_path)
    with DiskStore(path, document_embedder="minilm") as old:  # a store from before the static embedder
        ingest(files, old)
        memory = old.remember("my bike lock code is 4821")
        before = _entries(old, "documents")
        assert len(before) == 3 and old._collection_names() == {"memories", "documents"}
    DiskStore.drop_cached(path)
    with caplog.at_level(logging.INFO, logger="llmos.memory.disk"), DiskStore(path) as store:
        assert store.migrated == 3 and "re-embedding 3 document chunks" in caplog.text
        assert _entries(store, "documents") == before  # the same ids, texts and metadata
        assert store._collection_names() == {"memories", "documents-static"}
        assert store.get(memory).text == "my bike lock code is 4821"
        hit = store.search("when must the ferry tickets be bought", k=1, collection="documents")[0]
        assert "harbour office" in hit.text and hit.metadata["source"] == str(files[0])
    with DiskStore(path) as again:
        assert again.migrated == 0 and len(_entries(again, "documents")) == 3
    with DiskStore(path, document_embedder="minilm") as back:  # and back, with MiniLM's vectors
        assert back.migrated == 3 and _entries(back, "documents") == before
        vector = back._collection("documents").get(include=["embeddings"], limit=1)["embeddings"][0]
        assert len(vector) == 384


def test_a_migration_cut_short_is_finished_at_the_next_open(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "chroma"
    with DiskStore(path, document_embedder="minilm") as old:
        ingest(_files(tmp_path), old)
        before = _entries(old, "documents")
    DiskStore.drop_cached(path)

    def cannot_drop(self, name):
        raise RuntimeError("disk full")

    import chromadb.api.client

    with monkeypatch.context() as patch:
        patch.setattr(chromadb.api.client.Client, "delete_collection", cannot_drop)
        with DiskStore(path) as first:  # copied, but the old collection stays
            assert first.migrated == 3 and len(_entries(first, "documents")) == 3
            assert first._collection_names() == {"memories", "documents", "documents-static"}
    with DiskStore(path) as second:
        assert second.migrated == 3  # upserted again: no duplicates
        assert _entries(second, "documents") == before
        assert second._collection_names() == {"memories", "documents-static"}
        static = default_static_embedder()
        stored = np.array(second._collection("documents").get(include=["embeddings"])["embeddings"])
        assert stored.shape == (3, static.dimensions)


def test_the_cli_says_it_migrated_and_a_missing_table_is_no_reindex_matter(tmp_path: Path, monkeypatch, capsys) -> None:
    import argparse

    from llmos.app import memory_cli
    from llmos.memory import static_embedder
    from llmos.memory.embedder import EmbedderError

    monkeypatch.setenv("LLMOS_DATA_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    memory_cli.add_parser(parser.add_subparsers(dest="command"))

    def cli(config, *args: str) -> tuple[int, str]:
        code = memory_cli.run(parser.parse_args(["memory", *args]), config)
        return code, capsys.readouterr().err

    doc = _files(tmp_path)[0]
    old = load_config(None, env={"LLMOS_DATA_DIR": str(tmp_path), "LLMOS_DOCUMENT_EMBEDDER": "minilm"})
    assert cli(old, "add", str(doc))[0] == 0
    DiskStore.drop_cached(memory_cli.store_path(old))

    def missing() -> None:
        raise EmbedderError(f"the static embedding table {tmp_path}/t.npz is missing: rebuild it with `make setup`")

    with monkeypatch.context() as patch:
        patch.setattr(static_embedder, "default_static_embedder", missing)
        code, err = cli(load_config(None), "stats")
    assert code != 0 and "t.npz is missing" in err and "make setup" in err and "reindex" not in err
    DiskStore.drop_cached(memory_cli.store_path(old))
    code, err = cli(load_config(None), "stats")
    assert code == 0 and "re-embedded 1 document chunk for document_embedder=static" in err
