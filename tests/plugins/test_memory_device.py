"""The memory device through the registry and the dispatcher (real chromadb, real ONNX model)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import Dispatcher
from llmos.plugins.memory import device


@pytest.fixture()
def dispatcher(tmp_path: Path) -> Dispatcher:
    registry = DeviceRegistry()
    registry.register(device)
    registry.start(tmp_path)
    assert not registry.broken, registry.broken
    return Dispatcher(registry)


def test_manifest_has_three_calls_with_examples() -> None:
    manifest = device.manifest()
    assert manifest["name"] == "memory" and manifest["permissions"] == []
    calls = {c["name"]: c for c in manifest["calls"]}
    assert set(calls) == {"memory.remember", "memory.recall", "memory.forget"}
    assert calls["memory.remember"]["parameters"]["required"] == ["text"]
    assert calls["memory.recall"]["parameters"]["required"] == ["query"]
    assert calls["memory.forget"]["parameters"]["required"] == ["id"]
    for call in device.calls.values():
        assert call.examples and call.description
    remember = device.calls["remember"].examples[0]
    assert remember.request == "Remember that my bike lock code is 4821."
    assert remember.arguments == {"text": "my bike lock code is 4821"}


def test_the_store_opens_on_first_use_in_the_devices_folder(dispatcher: Dispatcher, tmp_path: Path) -> None:
    store = tmp_path / "devices" / "memory" / "chroma" / "chroma.sqlite3"
    assert not store.exists()  # starting the OS does not pay for chromadb
    assert dispatcher.call_blocking("memory.remember", {"text": "a first fact"}).ok
    assert store.is_file()


def test_a_corrupt_store_is_a_clear_error_not_a_crash(dispatcher: Dispatcher, tmp_path: Path) -> None:
    store = tmp_path / "devices" / "memory" / "chroma"
    store.mkdir(parents=True)
    (store / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    result = dispatcher.call_blocking("memory.recall", {"query": "anything"})
    assert not result.ok and "memory store" in result.error and str(store) in result.error


def test_remember_recall_forget(dispatcher: Dispatcher) -> None:
    empty = dispatcher.call_blocking("memory.recall", {"query": "anything"})
    assert empty.ok and "empty" in empty.value
    done = dispatcher.call_blocking("memory.remember", {"text": "my bike lock code is 4821"})
    assert done.ok, done.error
    dispatcher.call_blocking("memory.remember", {"text": "the dentist is on Tuesday at 3 pm"})
    dispatcher.call_blocking("memory.remember", {"text": "my sister Alice lives in Oslo"})
    recalled = dispatcher.call_blocking("memory.recall", {"query": "bike lock code", "limit": 2})
    assert recalled.ok and recalled.trusted
    first = recalled.value.splitlines()[0]
    assert "my bike lock code is 4821" in first
    entry_id = first[1:first.index("]")]
    assert entry_id in done.value
    forgot = dispatcher.call_blocking("memory.forget", {"id": entry_id})
    assert forgot.ok and entry_id in forgot.value
    again = dispatcher.call_blocking("memory.recall", {"query": "bike lock code"})
    assert "4821" not in again.value
    missing = dispatcher.call_blocking("memory.forget", {"id": entry_id})
    assert not missing.ok and "no memory" in missing.error


def test_bad_arguments_are_error_pages(dispatcher: Dispatcher) -> None:
    assert not dispatcher.call_blocking("memory.remember", {"text": "   "}).ok
    assert not dispatcher.call_blocking("memory.recall", {"query": "x", "limit": 99}).ok  # schema maximum
    assert not dispatcher.call_blocking("memory.recall", {}).ok


def test_documents_added_by_the_cli_are_recalled_as_untrusted(dispatcher: Dispatcher, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from llmos.app import memory_cli
    from llmos.kernel.config import load_config

    monkeypatch.setenv("LLMOS_DATA_DIR", str(tmp_path))
    config = load_config(None, overrides={})
    assert memory_cli.store_path(config) == tmp_path / "devices" / "memory" / "chroma"
    doc = tmp_path / "trip.md"
    doc.write_text("# Trip\n\nThe ferry to Bergen leaves at 07:40 from pier 3.\n")
    parser = argparse.ArgumentParser()
    memory_cli.add_parser(parser.add_subparsers(dest="command"))
    assert memory_cli.run(parser.parse_args(["memory", "add", str(doc)]), config) == 0
    assert "added 1 chunks" in capsys.readouterr().err
    result = dispatcher.call_blocking("memory.recall", {"query": "when does the ferry to Bergen leave"})
    assert result.ok and not result.trusted and "pier 3" in result.value and "trip.md" in result.value
    assert memory_cli.run(parser.parse_args(["memory", "search", "ferry", "--json", "-k", "1"]), config) == 0
    import json

    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 1 and "pier 3" in hits[0]["text"] and hits[0]["collection"] == "documents"
    assert memory_cli.run(parser.parse_args(["memory", "stats"]), config) == 0
    assert "documents: 1" in capsys.readouterr().out
    assert memory_cli.run(parser.parse_args(["memory", "forget", "nope"]), config) == 1
