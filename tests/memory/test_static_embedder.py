"""The static document embedder: the real table distilled from MiniLM (the one `make` installs;
distilled once for the session into a temporary folder when it is not there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmos.memory.embedder import EmbedderError
from llmos.memory.static_embedder import (
    DIMENSIONS,
    TABLE_VERSION,
    StaticChromaEmbeddingFunction,
    StaticEmbedder,
    default_table_path,
    distill,
    table_status,
)


@pytest.fixture(scope="session")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    installed = default_table_path()
    if table_status(installed) is None:
        return installed
    return distill(tmp_path_factory.mktemp("static") / "table.npz")  # about a minute


@pytest.fixture(scope="module")
def embedder(table: Path) -> StaticEmbedder:
    return StaticEmbedder(table)


def test_vectors_are_unit_length_and_deterministic(embedder: StaticEmbedder, table: Path) -> None:
    texts = ["The cat sat on the mat.", "x", "Quarterly revenue grew by 12 percent.", "word " * 5000]
    first = embedder.embed_array(texts)
    assert first.shape == (4, DIMENSIONS) == (4, embedder.dimensions) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, embedder.embed_array(texts))
    assert np.array_equal(first, StaticEmbedder(table).embed_array(texts))  # a new instance, the same vectors
    single = np.array([embedder.embed_one(t) for t in texts])
    assert np.abs(single - first).max() < 1e-6  # batching changes nothing
    assert embedder.embed([]) == [] and embedder.embed_array([]).shape == (0, DIMENSIONS)
    assert not embedder.embed_array([""]).any()  # no token: the zero vector, not NaN


def test_paraphrases_are_closer_than_unrelated_sentences(embedder: StaticEmbedder) -> None:
    pairs = [
        ("My bike lock code is 4821.", "The combination of my bicycle padlock is 4821."),
        ("The meeting moved to Thursday afternoon.", "We rescheduled the meeting for Thursday after lunch."),
        ("How do I reset my password?", "I forgot my password, how can I change it?"),
        ("When does the ferry to Bergen leave?", "The boat to Bergen departs at 07:40 from pier 3."),
    ]
    unrelated = ["Penguins live in the southern hemisphere.", "The stock market fell sharply today.",
                 "Bake the bread for forty minutes at 200 degrees."]
    others = embedder.embed_array(unrelated)
    for a, b in pairs:
        va, vb = embedder.embed_array([a, b])
        assert float(va @ vb) > float((others @ va).max()) + 0.1, (a, b)


def test_the_chroma_function_has_its_own_name(embedder: StaticEmbedder) -> None:
    function = StaticChromaEmbeddingFunction(embedder)
    assert function.name() == "llmos-static-minilm" != "llmos-minilm-int8"
    assert np.allclose(np.array(function(["hello world"])), embedder.embed_array(["hello world"]))


def test_a_missing_table_says_how_to_rebuild_it(tmp_path: Path) -> None:
    missing = tmp_path / "static" / "nope.npz"
    with pytest.raises(EmbedderError) as info:
        StaticEmbedder(missing)
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "missing" in message and "make setup" in message
    assert table_status(missing) == message


def _write(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("kind", ["garbage", "truncated", "old version", "wrong shape", "no vectors", "nan"])
def test_a_corrupt_table_is_a_clear_error(tmp_path: Path, table: Path, kind: str) -> None:
    path = tmp_path / "table.npz"
    good = {"vectors": np.ones((30522, 8), np.float16), "version": np.int64(TABLE_VERSION), "source": np.array("x")}
    if kind == "garbage":
        path.write_bytes(b"not a table at all" * 100)
    elif kind == "truncated":
        path.write_bytes(table.read_bytes()[:100_000])
    elif kind == "old version":
        _write(path, **{**good, "version": np.int64(TABLE_VERSION - 1)})
    elif kind == "wrong shape":
        _write(path, **{**good, "vectors": np.ones((500, 8), np.float16)})
    elif kind == "no vectors":
        _write(path, version=good["version"], source=good["source"])
    else:
        vectors = np.ones((30522, 8), np.float32)
        vectors[7, 3] = np.nan
        _write(path, **{**good, "vectors": vectors})
    with pytest.raises(EmbedderError) as info:
        StaticEmbedder(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "make setup" in message


def test_a_table_with_another_vocabulary_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.npz", vectors=np.ones((5000, 8), np.float16), version=np.int64(TABLE_VERSION),
                  source=np.array("x"))
    with pytest.raises(EmbedderError, match="5000 rows"):
        StaticEmbedder(path)


def test_the_installed_table_is_built_from_the_installed_model(table: Path) -> None:
    assert table_status(table) is None
