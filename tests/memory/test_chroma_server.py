"""`chroma_url`: the memory store on a real Chroma server (`chroma run`) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.memory.disk import DiskStore, StoreError
from llmos.memory.ingest import ingest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory) -> Iterator[str]:
    """A `chroma run` server on a free port, with its data in a temporary folder; stopped after."""
    chroma = Path(sys.executable).with_name("chroma")
    if not chroma.exists():
        chroma = Path(shutil.which("chroma") or "chroma")
    data = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = (data / "server.log").open("w")
    server = subprocess.Popen([str(chroma), "run", "--path", str(data / "db"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma run did not start: {(data / 'server.log').read_text()[-500:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


def test_remember_search_and_ingest_on_the_server(chroma_server, tmp_path):
    with DiskStore(tmp_path / "a", url=chroma_server) as store:
        entry = store.remember("my bike lock code is 4821")
        doc = tmp_path / "trip.md"
        doc.write_text("# Trip\n\nThe ferry to Bergen leaves at 07:40 from pier 3.\n")
        assert ingest(doc, store).chunks == 1
        assert store.search("bicycle lock", k=1)[0].id == entry
        assert store.stats()["path"].startswith(chroma_server)
    # another client (another llmos process's folder) sees the same collections on the server
    with DiskStore(tmp_path / "b", url=chroma_server) as other:
        hits = other.search("when does the ferry leave", k=3, collection="all")
        assert any("07:40" in h.text for h in hits)
        assert other.search("4821", k=1)[0].id == entry  # the keyword index is rebuilt from the server
        assert other.forget(entry)
    with DiskStore(tmp_path / "a", url=chroma_server) as store:
        assert store.get(entry) is None
    assert not (tmp_path / "a" / "chroma.sqlite3").exists()  # nothing was stored locally


def test_cli_uses_the_server_from_the_config(chroma_server, tmp_path):
    env = {**os.environ, "LLMOS_DATA_DIR": str(tmp_path), "LLMOS_CONFIG": str(tmp_path / "none.toml"),
           "LLMOS_CHROMA_URL": chroma_server}
    note = tmp_path / "note.txt"
    note.write_text("The spare key is under the blue flower pot.\n")
    run = [sys.executable, "-m", "llmos.app.cli", "memory"]
    added = subprocess.run([*run, "add", str(note)], capture_output=True, text=True, env=env, timeout=180)
    assert added.returncode == 0, added.stderr
    found = subprocess.run([*run, "search", "where is the spare key", "--json", "-k", "1", "--in", "documents"],
                           capture_output=True, text=True, env=env, timeout=180)
    assert found.returncode == 0, found.stderr
    assert "blue flower pot" in json.loads(found.stdout)[0]["text"]
    refused = subprocess.run([*run, "reindex"], capture_output=True, text=True, env=env, timeout=180)
    assert refused.returncode == 1 and "Chroma server" in refused.stderr


def test_a_server_that_is_not_there_is_one_clear_line(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(StoreError) as info:
        DiskStore(tmp_path / "x", url=url)
    message = str(info.value)
    assert url in message and "\n" not in message
    with pytest.raises(StoreError, match="not an http"):
        DiskStore(tmp_path / "x", url="ftp://example")
