"""Static embeddings distilled from all-MiniLM-L6-v2: thousands of chunks a second on 2 cores.

The idea is model2vec's ("distil a static embedding from a sentence transformer"), done here
with the MiniLM ONNX model and tokenizer llmos already ships, so nothing is downloaded:

1. every token of the vocabulary goes through the sentence transformer once, as
   ``[SEP] token [CLS]`` (model2vec's reversed order; on the labelled set it beat
   ``[CLS] token [SEP]`` by 3 points of recall@5); the mean of the three output vectors is the
   token's vector;
2. the table is centred and rotated by PCA (its common direction goes; ``DIMENSIONS`` kept);
3. each token is weighted by SIF, ``a / (a + p)``, with ``p`` its Zipf frequency estimated from
   its rank in the vocabulary (BERT's word pieces are in frequency order), so "the" and "of"
   count for little and rare words for much;
4. a text's vector is the normalised mean of its tokens' rows: a table lookup, no network.

The table is built once at set-up (``tools/install_static_embedder.py``, run by ``make``) into
``<models>/static/`` (``~/.local/share/llmos/models`` or ``$LLMOS_MODELS_DIR``) as an ``.npz``
with a version stamp and the checksum of the model it came from. A missing, stale or corrupt
table raises :class:`EmbedderError` naming the file and the command that rebuilds it.

    embedder = StaticEmbedder()
    vectors = embedder.embed(["a cat sat on the mat", "stock prices fell"])
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .embedder import ChromaEmbeddingFunction, EmbedderBase, EmbedderError, _model_files, once, onnx_session

__all__ = ["DIMENSIONS", "TABLE_VERSION", "StaticEmbedder", "StaticChromaEmbeddingFunction",
           "default_static_embedder", "default_table_path", "distill", "table_status"]

log = logging.getLogger(__name__)

TABLE_VERSION = 1
DIMENSIONS = 256  # PCA: 256 of MiniLM's 384 dimensions (see README: measured against 384)
SIF_COEFFICIENT = 1e-4
WORDS_START = 1996  # BERT's vocabulary: [PAD], [unused*], specials, single characters, then words by frequency
MAX_TOKENS = 2048  # a static embedding has no attention window; very long texts are cut here
REBUILD_HINT = "rebuild it with `make setup` (or `.venv/bin/python tools/install_static_embedder.py`)"


def default_table_path() -> Path:
    """``<models>/static/minilm-static-v<version>.npz``."""
    from llmos.kernel.model_file import models_dir

    return models_dir() / "static" / f"minilm-static-v{TABLE_VERSION}.npz"


def _source_checksum(model: Path, tokenizer: Path) -> str:
    digest = hashlib.sha256()
    for path in (model, tokenizer):
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _sif_weights(vocabulary: int) -> Any:
    """SIF weight per token id from a Zipf estimate of its frequency by rank.

    Words (id >= WORDS_START) are ranked by id; the single characters before them (punctuation
    among them) are ranked as frequent as the most frequent words."""
    import numpy as np

    ids = np.arange(vocabulary)
    rank = np.maximum(ids - WORDS_START, 0) + 1
    inverse = 1.0 / rank
    frequency = inverse / inverse.sum()
    return (SIF_COEFFICIENT / (SIF_COEFFICIENT + frequency)).astype(np.float32)


def _token_vectors(progress: Callable[[int, int], None] | None, batch: int = 512,
                   threads: int | None = None) -> Any:
    """The MiniLM output for every vocabulary token, as ``[SEP] token [CLS]``: (vocabulary, 384) float32."""
    import numpy as np
    from tokenizers import Tokenizer

    model_path, tokenizer_path = _model_files()
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    vocabulary = tokenizer.get_vocab_size()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise EmbedderError(f"{tokenizer_path}: the tokenizer has no [CLS] or [SEP] token")
    session = onnx_session(model_path, threads)
    inputs = {i.name for i in session.get_inputs()}
    out = np.zeros((vocabulary, 384), dtype=np.float32)
    for start in range(0, vocabulary, batch):
        ids = np.arange(start, min(vocabulary, start + batch), dtype=np.int64)
        seqs = np.stack([np.full_like(ids, sep), ids, np.full_like(ids, cls)], axis=1)
        feeds = {"input_ids": seqs, "attention_mask": np.ones_like(seqs)}
        if "token_type_ids" in inputs:
            feeds["token_type_ids"] = np.zeros_like(seqs)
        hidden = session.run(None, feeds)[0]  # (batch, 3, 384)
        out[start:start + len(ids)] = hidden.mean(axis=1)
        if progress:
            progress(start + len(ids), vocabulary)
    return out


def distill(path: str | os.PathLike[str] | None = None, *, dimensions: int = DIMENSIONS,
            progress: Callable[[int, int], None] | None = None) -> Path:
    """Build the static table from the installed MiniLM ONNX model and write it to ``path``
    (atomically); returns the path. About a minute on 2 cores."""
    import numpy as np

    target = Path(path) if path is not None else default_table_path()
    model_path, tokenizer_path = _model_files()
    started = time.perf_counter()
    raw = _token_vectors(progress)
    centred = raw - raw.mean(axis=0, keepdims=True)
    # PCA by SVD of the centred table: rows projected on the leading right-singular vectors
    _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
    dimensions = min(dimensions, vt.shape[0])
    vectors = centred @ vt[:dimensions].T
    vectors *= _sif_weights(len(vectors))[:, None]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, vectors=vectors.astype(np.float16), version=np.int64(TABLE_VERSION),
             source=np.array(_source_checksum(model_path, tokenizer_path)))
    os.replace(tmp, target)
    log.info("static embedder: distilled %s in %.1f s", target, time.perf_counter() - started)
    return target


def _load_table(path: Path, checksum: str | None = None) -> Any:
    """The (vocabulary, dims) float32 table in ``path``; EmbedderError when missing, stale or corrupt."""
    import numpy as np

    if not path.is_file():
        raise EmbedderError(f"the static embedding table {path} is missing: {REBUILD_HINT}")
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["version"])
            source = str(data["source"])
            vectors = np.asarray(data["vectors"], dtype=np.float32)
    except Exception as exc:  # truncated zip, missing member, not an npz at all
        raise EmbedderError(f"the static embedding table {path} is corrupt ({type(exc).__name__}): {REBUILD_HINT}") from None
    if version != TABLE_VERSION:
        raise EmbedderError(f"the static embedding table {path} is version {version}, not {TABLE_VERSION}: {REBUILD_HINT}")
    if vectors.ndim != 2 or vectors.shape[0] < 1000 or not np.isfinite(vectors).all():
        raise EmbedderError(f"the static embedding table {path} is corrupt (shape {vectors.shape}): {REBUILD_HINT}")
    if checksum is not None and source != checksum:
        raise EmbedderError(f"the static embedding table {path} was built from another MiniLM model: {REBUILD_HINT}")
    return vectors


def table_status(path: str | os.PathLike[str] | None = None) -> str | None:
    """None when the table at ``path`` is usable and built from the installed model, else why not."""
    target = Path(path) if path is not None else default_table_path()
    try:
        model, tokenizer = _model_files()
        _load_table(target, _source_checksum(model, tokenizer))
    except EmbedderError as exc:
        return str(exc)
    return None


class StaticEmbedder(EmbedderBase):
    """Static MiniLM token vectors, mean-pooled: the :class:`~llmos.memory.embedder.Embedder`
    interface (``embed``, ``embed_one``, ``embed_array``, ``dimensions``), thread-safe."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        try:
            import numpy as np
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderError(f"the static embedder needs numpy and tokenizers ({exc.name} is missing)") from None
        self.path = Path(path) if path is not None else default_table_path()
        self._np = np
        table = _load_table(self.path)
        _model, tokenizer_path = _model_files()
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        if tokenizer.get_vocab_size() != table.shape[0]:
            raise EmbedderError(f"the static embedding table {self.path} has {table.shape[0]} rows for a "
                                f"{tokenizer.get_vocab_size()}-token vocabulary: {REBUILD_HINT}")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer = tokenizer
        self._table = table
        self.dimensions = int(table.shape[1])
        self._lock = threading.Lock()

    def embed_array(self, texts: Sequence[str]) -> Any:
        """Like :meth:`embed`, as a float32 numpy array of shape (len(texts), dimensions).

        A text with no known token (empty, only spaces) gets the zero vector."""
        np = self._np
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        table = self._table
        for row, encoding in enumerate(encodings):
            if encoding.ids:
                # one text at a time: gathering every text's rows at once costs 30x more (a
                # 300 MB temporary for 2,000 chunks)
                out[row] = table[encoding.ids].sum(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)  # the mean's direction is the sum's


@once
def default_static_embedder() -> StaticEmbedder:
    """One shared :class:`StaticEmbedder` per process (the table loads once)."""
    return StaticEmbedder()


class StaticChromaEmbeddingFunction(ChromaEmbeddingFunction):
    """chromadb ``EmbeddingFunction`` around :class:`StaticEmbedder`; its own name, so chromadb
    keeps collections embedded by it apart from MiniLM's."""

    def __init__(self, embedder: Any = None) -> None:
        super().__init__(embedder)

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = default_static_embedder()
        return self._embedder

    @staticmethod
    def name() -> str:
        return "llmos-static-minilm"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "StaticChromaEmbeddingFunction":
        return StaticChromaEmbeddingFunction()
