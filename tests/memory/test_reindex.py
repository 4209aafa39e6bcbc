"""`llmos memory reindex`: a corrupt or missing store is rebuilt from the journal and the original files."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from llmos.app import memory_cli
from llmos.app.boot import attach_journal
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.config import load_config
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import TurnOptions
from llmos.memory.pager import DiskPager


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """Run `llmos memory ...` in this process on ``tmp_path``; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("LLMOS_DATA_DIR", str(tmp_path))
    config = load_config(None, overrides={})
    parser = argparse.ArgumentParser()
    memory_cli.add_parser(parser.add_subparsers(dest="command"))

    def run(*args: str) -> tuple[int, str, str]:
        code = memory_cli.run(parser.parse_args(["memory", *args]), config)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def fill(tmp_path: Path, cli) -> dict[str, str]:
    """A remembered fact (the memory device), a paged-out turn (the pager), an ingested file."""
    registry = DeviceRegistry.from_entry_points()
    registry.start(tmp_path)
    store = tmp_path / "devices" / "memory" / "chroma"
    backend = ScriptedBackend(responder=lambda prompt: "ANSWER: " + "noted " * 30)
    backend.enqueue('CALL memory.remember {"text": "my bike lock code is 4821"}', "ANSWER: Remembered.")
    pager = DiskPager(store)
    kernel = Kernel(backend, registry, TurnOptions(ram_tokens=1), pager=pager)
    journal = attach_journal(kernel, tmp_path / "journal.sqlite3")
    kernel.start()
    try:
        pid = kernel.spawn("chat")
        result = kernel.submit(pid, "Remember that my bike lock code is 4821.").result(60)
        assert result.syscalls and result.syscalls[0]["ok"], result
        kernel.submit(pid, "My neighbour's parrot is called Captain Biscuit.").result(60)
        kernel.submit(pid, "Something else entirely.").result(60)
        kernel.submit(pid, "And one more thing.").result(60)
    finally:
        kernel.shutdown()
        journal.close()
    pager.flush()  # page-out writes on a worker thread
    doc = tmp_path / "boat.md"
    doc.write_text("# Boat\n\nThe ferry to Bergen leaves at 07:40 from pier 3.\n\n"
                   "The ferry back leaves at 18:05.\n")
    code, _, err = cli("add", str(doc))
    assert code == 0, err
    code, out, _ = cli("search", "bike lock code", "--json", "-k", "1")
    fact = json.loads(out)[0]
    assert "4821" in fact["text"]
    code, out, _ = cli("search", "parrot name", "--json", "-k", "3", "--in", "memories")
    paged = [h for h in json.loads(out) if h["metadata"].get("kind") == "evicted-turn"]
    assert paged and "Captain Biscuit" in paged[0]["text"]
    return {"fact": fact["id"], "store": str(store)}


def test_corrupt_store_clear_error_then_reindex_finds_everything_again(tmp_path, cli):
    found = fill(tmp_path, cli)
    store = Path(found["store"])
    (store / "chroma.sqlite3").write_bytes(os.urandom(64 * 1024))

    code, _, err = cli("search", "ferry")
    assert code == 1 and err.strip().count("\n") == 0
    assert str(store) in err and "llmos memory reindex" in err

    code, _, err = cli("reindex")
    assert code == 0, err
    assert "moved aside" in err and "1 memories" in err and "1 file(s)" in err
    aside = [p for p in tmp_path.joinpath("devices", "memory").iterdir() if p.name.startswith("chroma.broken-")]
    assert len(aside) == 1 and (aside[0] / "chroma.sqlite3").is_file()  # nothing deleted

    code, out, _ = cli("search", "bike lock code", "--json", "-k", "1")
    hit = json.loads(out)[0]
    assert code == 0 and hit["id"] == found["fact"] and "4821" in hit["text"]  # the same id as before
    code, out, _ = cli("search", "when does the ferry to Bergen leave", "--json", "-k", "1", "--in", "documents")
    hit = json.loads(out)[0]
    assert "07:40" in hit["text"] and hit["metadata"]["source"] == str(tmp_path / "boat.md")
    code, out, _ = cli("search", "parrot name", "--json", "-k", "3", "--in", "memories")
    assert any("Captain Biscuit" in h["text"] for h in json.loads(out))


def test_a_missing_store_is_a_clear_error_and_forgotten_entries_stay_forgotten(tmp_path, cli):
    import shutil

    found = fill(tmp_path, cli)
    code, _, _ = cli("forget", found["fact"])
    assert code == 0
    shutil.rmtree(found["store"])
    code, _, err = cli("stats")
    assert code == 1 and "is missing" in err and "llmos memory reindex" in err and "\n" not in err.strip()
    (tmp_path / "boat.md").unlink()  # the original file is gone too: reported, the rest rebuilt
    code, _, err = cli("reindex")
    assert code == 1 and "boat.md: no such file any more" in err
    code, out, _ = cli("search", "bike lock code", "--json", "-k", "5", "--in", "memories")
    texts = [h["text"] for h in json.loads(out)]
    assert not any(t == "my bike lock code is 4821" for t in texts)  # forgotten stays forgotten
    code, out, _ = cli("search", "parrot name", "--json", "-k", "3", "--in", "memories")
    assert any("Captain Biscuit" in h["text"] for h in json.loads(out))  # the paged-out turns came back
    code, out, _ = cli("stats", "--json")
    stats = json.loads(out)
    assert stats["collections"]["documents"] == 0 and stats["collections"]["memories"] >= 1
