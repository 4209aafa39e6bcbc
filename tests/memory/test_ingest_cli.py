"""`llmos memory add`: a progress bar on a TTY, quiet when piped; big files ingest with bounded memory."""

from __future__ import annotations

import hashlib
import os
import pty
import random
import select
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from llmos.app.memory_cli import progress_line
from llmos.memory.disk import DiskStore
from llmos.memory.ingest import CHUNK_CHARS, IngestProgress, ingest


def notes(path: Path, paragraphs: int = 40) -> Path:
    rng = random.Random(3)
    words = "harbour ferry ticket morning garden tomato rose kernel memory page".split()
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(60)) + "." for _ in range(paragraphs)))
    return path


def env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "LLMOS_DATA_DIR": str(data_dir), "LLMOS_CONFIG": str(data_dir / "none.toml")}


def test_progress_line_shows_file_bar_percent_chunks_and_rate():
    half = IngestProgress("/docs/notes.txt", 2, 3, chunks=40, bytes_done=500, bytes_total=1000)
    line = progress_line(half, elapsed=2.0, width=10)
    assert line == "[2/3] notes.txt [#####-----]  50%  40 chunks  20/s"
    done = IngestProgress("/docs/notes.txt", 3, 3, chunks=80, bytes_done=1000, bytes_total=1000, done=True)
    assert "[##########] 100%" in progress_line(done, elapsed=0.0, width=10)


def test_cli_add_draws_a_bar_on_a_tty_and_is_quiet_when_piped(tmp_path):
    doc = notes(tmp_path / "notes.txt")
    master, slave = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "llmos.app.cli", "memory", "add", str(doc)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env(tmp_path))
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            seen += data
        elif child.poll() is not None:
            break
    child.wait(30)
    os.close(master)
    text = seen.decode("utf-8", "replace")
    assert child.returncode == 0, text
    assert "\r\x1b[K[1/1] notes.txt [" in text and "] 100%" in text, text
    assert "added " in text and " chunks from 1 file(s)" in text

    piped = subprocess.run([sys.executable, "-m", "llmos.app.cli", "memory", "add", str(doc)],
                           capture_output=True, text=True, env=env(tmp_path / "other"), timeout=180)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr.strip().splitlines() == [piped.stderr.strip()]  # one summary line, no bar
    assert piped.stderr.startswith("added ") and "\r" not in piped.stderr


class HashEmbedder:
    """Deterministic 384-d vectors from a hash: the memory bound is about reading and batching,
    not the model (the real embedder ingests in the other tests)."""

    def embed_array(self, texts):
        out = np.empty((len(texts), 384), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            row = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
            out[i] = row / np.linalg.norm(row)
        return out

    def embed(self, texts):
        return self.embed_array(texts).tolist()


def big_text(path: Path, size: int) -> Path:
    rng = random.Random(11)
    words = "memory kernel device process scheduler chroma vector paragraph sentence token".split()
    with path.open("w") as f:
        while f.tell() < size:
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) + ". "
            f.write(sentence * rng.randint(1, 6) + ("\n\n" if rng.random() < 0.5 else "\n"))
    return path


def ingest_with_bounded_memory(tmp_path: Path, size: int) -> tuple[int, int, int]:
    """Ingest a ``size``-byte text file into a real chromadb store; (chunks, peak Python bytes, size)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = big_text(tmp_path / "big.txt", size)
    actual = path.stat().st_size
    embedder = HashEmbedder()
    embedder.embed_array(["warm up"])  # numpy.random's first use imports modules: not the file's cost
    # document_embedder="minilm": the hash embedder stands in for MiniLM in both collections
    with DiskStore(tmp_path / "chroma", embedder=embedder, document_embedder="minilm") as store:
        store.add_many(["warm up"], collection="memories")  # chromadb's first write, likewise
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            report = ingest(path, store)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert store.count("documents") == report.chunks
    return report.chunks, peak, actual


def test_ingest_memory_does_not_grow_with_the_file(tmp_path):
    small_chunks, small_peak, small = ingest_with_bounded_memory(tmp_path / "small", 200_000)
    chunks, peak, size = ingest_with_bounded_memory(tmp_path / "large", 800_000)
    assert chunks >= size / CHUNK_CHARS and chunks > 3 * small_chunks
    # one batch of chunks and vectors in flight, not the file: 4x the text, about the same peak
    # (measured: 310 kB and 352 kB; what grows is the list of chunk ids)
    assert peak < size / 2, f"peak {peak} bytes of Python memory for a {size}-byte file"
    assert peak - small_peak < 0.15 * (size - small), (small_peak, peak)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~62,000 chunks into chromadb under tracemalloc: over 10 minutes on a busy machine
def test_a_50_mb_file_ingests_in_chunks_with_bounded_memory(tmp_path):
    chunks, peak, size = ingest_with_bounded_memory(tmp_path, 50_000_000)
    assert chunks >= size / CHUNK_CHARS
    # one batch in flight and the chunk ids (kept to undo a failed file, ~70 bytes a chunk)
    assert peak < size / 8, f"peak {peak} bytes of Python memory for a {size}-byte file"
