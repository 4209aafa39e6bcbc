"""Chromadb as disk: long-term memory that outlives the context window.

:class:`DiskStore` keeps two chromadb collections in one folder:

- ``memories``: short facts remembered on request ("my bike lock code is 4821");
- ``documents``: chunks of ingested files (see :mod:`llmos.memory.ingest`).

Every entry carries metadata: ``source``, ``process``/``conversation`` (when known), ``created``
(Unix time), ``provenance`` (``trusted`` for what the user said, ``untrusted`` for outside text)
and ``kind``. Search is hybrid: the collection's vector ranking (cosine) and a BM25 keyword
ranking are fused by reciprocal rank fusion (RRF, k=60), so both paraphrases and exact words
(names, codes, numbers) are found.

Each collection has its own embedder. Memories (few, short, quality matters) always use
all-MiniLM-L6-v2; documents use ``document_embedder``: ``"static"`` (the table distilled from
MiniLM, :mod:`llmos.memory.static_embedder`, ~100x faster to ingest) or ``"minilm"``. chromadb
persists a collection's embedding function, so each document embedder has its own collection
(``documents`` for MiniLM, ``documents-static`` for static) behind the one name ``documents``.
Opening a store with the other embedder than its documents were embedded with re-embeds them
into the chosen collection (ids, texts and metadata kept; the texts are in chroma) and then
drops the old collection; a migration cut short is finished at the next open.

The BM25 index lives in memory and is rebuilt lazily from the collection's documents: when the
store is first searched, when the collection's size differs from the index, or when another
process changed the store (every :class:`DiskStore` mutation writes a new token to
``llmos-generation`` in the folder; a token that is not ours means rebuild).

A store folder that cannot be opened (not a folder, unreadable, a corrupt ``chroma.sqlite3``)
raises :class:`StoreError` with one line naming the path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.kernel.devices import one_line

from .bm25 import BM25Index
from .embedder import ChromaEmbeddingFunction, Embedder, EmbedderError, default_embedder

__all__ = ["COLLECTIONS", "DEFAULT_DOCUMENT_EMBEDDER", "DOCUMENT_EMBEDDERS", "DiskStore", "EmbedderUnavailable", "Hit",
           "StoreError"]

log = logging.getLogger(__name__)

COLLECTIONS = ("memories", "documents")
RRF_K = 60
GENERATION_FILE = "llmos-generation"
PROVENANCES = ("trusted", "untrusted")
_PAGE = 5000
COUNT_CHECK_S = 2.0  # how often search re-checks the collection's size against the BM25 index
DOCUMENT_EMBEDDERS = ("static", "minilm")
DEFAULT_DOCUMENT_EMBEDDER = "static"
# the chromadb collection behind a collection name, per embedder (MiniLM's keep the old names)
PHYSICAL = {("memories", "minilm"): "memories", ("documents", "minilm"): "documents",
            ("documents", "static"): "documents-static"}
MODEL_NAMES = {"minilm": "all-MiniLM-L6-v2 (int8 ONNX, 384-d, cosine)",
               "static": "static MiniLM (distilled token vectors, 256-d, cosine)"}


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message is one line naming the folder."""


class EmbedderUnavailable(StoreError):
    """The store is fine but an embedder it needs cannot load (the message says how to fix it)."""


@dataclass(frozen=True)
class Hit:
    """One search result. ``score`` is the fused RRF score (higher is better)."""

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    collection: str = "memories"
    similarity: float | None = None  # cosine similarity to the query, when the vector search found it


def _http_address(url: str) -> dict[str, Any]:
    """``http(s)://host[:port]`` -> chromadb.HttpClient's host, port and ssl; StoreError if not a URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"memory store {url}: not an http(s)://host:port address")
    ssl = parts.scheme == "https"
    return {"host": parts.hostname, "port": parts.port or (443 if ssl else 8000), "ssl": ssl}




class DiskStore:
    """A chromadb folder with the ``memories`` and ``documents`` collections and hybrid search."""

    def __init__(self, path: str | os.PathLike[str], embedder: Embedder | None = None, *,
                 url: str | None = None, document_embedder: str | None = None,
                 static_embedder: Any = None) -> None:
        """A store in the folder ``path``; with ``url`` (``http://host:port``) the collections live
        on that Chroma server (``chromadb.HttpClient``) and ``path`` only keeps the generation token.

        ``embedder`` is the MiniLM embedder (shared by default), ``document_embedder`` which one
        embeds documents (``"static"`` or ``"minilm"``; None: ``DEFAULT_DOCUMENT_EMBEDDER``),
        ``static_embedder`` the static one (by default the shared one on the installed table)."""
        document_embedder = document_embedder or DEFAULT_DOCUMENT_EMBEDDER
        if document_embedder not in DOCUMENT_EMBEDDERS:
            raise ValueError(f"document_embedder must be one of {', '.join(DOCUMENT_EMBEDDERS)}, not {document_embedder!r}")
        self.path = Path(path).expanduser()
        self.url = url or None
        self.kinds = {"memories": "minilm", "documents": document_embedder}
        self._lock = threading.RLock()
        self._embedder = embedder
        self._static = static_embedder
        self._indexes: dict[str, BM25Index] = {}
        self._generation: str | None = None
        self._checked: dict[str, float] = {}
        self._client: Any = None
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"memory store {self.path}: not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"memory store {self.path}: cannot create the folder ({exc.strerror or exc})") from None
        if not os.access(self.path, os.R_OK | os.W_OK | os.X_OK):
            raise StoreError(f"memory store {self.path}: the folder is not readable and writable")
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError as exc:
            raise StoreError(f"memory store {self.path}: the chromadb package is missing ({exc})") from None
        self._efs = {"minilm": ChromaEmbeddingFunction(embedder), "static": self._static_function()}
        with self._guard("cannot open the store"):
            settings = Settings(anonymized_telemetry=False, allow_reset=False)
            if self.url:
                address = _http_address(self.url)
                try:
                    self._client = chromadb.HttpClient(**address, settings=settings)
                except ValueError as exc:  # chromadb's "Could not connect to a Chroma server"
                    raise StoreError(f"memory store {self.where}: cannot open the store: {one_line(exc)}") from None
            else:
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            self._collections = {name: self._open_collection(name) for name in COLLECTIONS}
            for collection in self._collections.values():
                collection.count()  # reads the database now: corruption shows here, not later
        self.migrated = self._migrate_documents()

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """What error messages name: the server's URL, or the folder."""
        return f"{self.url} (Chroma server)" if self.url else str(self.path)

    @property
    def embedder(self) -> Embedder:
        """The MiniLM embedder (memories, and documents when ``document_embedder`` is minilm)."""
        if self._embedder is None:
            self._embedder = self._shared_embedder(default_embedder)
        return self._embedder

    @property
    def static_embedder(self) -> Any:
        if self._static is None:
            from .static_embedder import default_static_embedder

            self._static = self._shared_embedder(default_static_embedder)
        return self._static

    def _shared_embedder(self, factory: Any) -> Any:
        try:
            return factory()
        except EmbedderError as exc:
            raise EmbedderUnavailable(f"memory store {self.where}: {exc}") from None

    def embedder_for(self, collection: str) -> Any:
        """The embedder of collection ``memories`` or ``documents``."""
        self._collection(collection)
        return self.static_embedder if self.kinds[collection] == "static" else self.embedder

    def _static_function(self) -> Any:
        from .static_embedder import StaticChromaEmbeddingFunction

        return StaticChromaEmbeddingFunction(self._static)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """chromadb's errors (sqlite, Rust bindings, ...) -> one-line StoreError naming the path."""
        try:
            yield
        except (StoreError, EmbedderError):
            raise
        except ValueError:
            raise  # our own argument errors and chromadb's validation errors stay what they are
        except Exception as exc:
            raise StoreError(f"memory store {self.where}: {what}: {one_line(exc)}") from None
        except BaseException as exc:  # pyo3 panics derive from BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            raise StoreError(f"memory store {self.where}: {what}: {one_line(exc)}") from None

    def _open_collection(self, name: str, kind: str | None = None) -> Any:
        kind = kind or self.kinds[name]
        return self._client.get_or_create_collection(
            PHYSICAL[(name, kind)],
            embedding_function=self._efs[kind],
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"llmos": "memory"},
        )

    def _collection_names(self) -> set[str]:
        return {c if isinstance(c, str) else c.name for c in self._client.list_collections()}

    def _migrate_documents(self) -> int:
        """Re-embed the chunks of a documents collection of the other embedder into ours, then
        drop it; returns how many were moved. Upserts keep a second run (after a crash, or
        another process migrating at once) harmless."""
        ours = self.kinds["documents"]
        moved = 0
        for kind in DOCUMENT_EMBEDDERS:
            if kind == ours:
                continue
            name = PHYSICAL[("documents", kind)]
            with self._guard("cannot read the old documents collection"):
                if name not in self._collection_names():
                    continue
                old = self._client.get_collection(name, embedding_function=self._efs[kind])
                total = old.count()
            if total:
                log.info("memory store %s: re-embedding %d document chunks (%s -> %s)", self.where, total, kind, ours)
                embedder = self.embedder_for("documents")
            target = self._collections["documents"]
            offset = 0
            while offset < total:
                with self._guard("cannot read the old documents collection"):
                    page = old.get(include=["documents", "metadatas"], limit=_PAGE, offset=offset)
                if not page["ids"]:
                    break
                texts = [d or "" for d in page["documents"]]
                vectors = embedder.embed_array(texts)
                with self._lock, self._guard("cannot write"):
                    self._write(target.upsert, page["ids"], texts, page["metadatas"], vectors)
                offset += len(page["ids"])
                moved += len(page["ids"])
            try:
                self._client.delete_collection(name)
            except Exception as exc:  # or another process dropped it first: either way, ours is whole
                log.warning("memory store %s: cannot drop the old documents collection %s yet (%s); "
                            "the next open tries again", self.where, name, one_line(exc))
            if total:
                self._mutated(self._indexes.clear)
        return moved

    def _collection(self, name: str) -> Any:
        if name not in self._collections:
            raise ValueError(f"no collection {name!r} (use one of {', '.join(COLLECTIONS)})")
        return self._collections[name]

    def close(self) -> None:
        """Release chromadb's handles on the folder (the store cannot be used afterwards)."""
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None
                self._collections = {}

    @staticmethod
    def drop_cached(path: str | os.PathLike[str]) -> None:
        """Forget chromadb's in-process cache of the folder ``path`` (chromadb shares one system
        per folder): after a folder was moved aside, a new store there must not reuse it."""
        try:
            from chromadb.api.shared_system_client import SharedSystemClient
        except ImportError:  # pragma: no cover - chromadb is a dependency
            return
        key = str(Path(path).expanduser())
        system = SharedSystemClient._identifier_to_system.pop(key, None)
        SharedSystemClient._identifier_to_refcount.pop(key, None)
        if system is not None:
            with contextlib.suppress(Exception):
                system.stop()

    def __enter__(self) -> "DiskStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the generation token: keeps BM25 consistent with writes by other processes -------------

    def _read_generation(self) -> str | None:
        try:
            return (self.path / GENERATION_FILE).read_text(encoding="ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def _mutated(self, apply_to_indexes: Any) -> None:
        """After a write: update our indexes if they were current, and publish a new token."""
        current = self._read_generation()
        if current == self._generation:
            apply_to_indexes()
        else:
            self._indexes.clear()  # someone else wrote too: rebuild on the next search
        token = uuid.uuid4().hex
        tmp = self.path / f"{GENERATION_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_text(token, encoding="ascii")
            os.replace(tmp, self.path / GENERATION_FILE)
            self._generation = token
        except OSError as exc:
            log.warning("memory store %s: cannot write %s: %s", self.path, GENERATION_FILE, exc)
            self._indexes.clear()

    def _index(self, name: str) -> BM25Index:
        """The BM25 index of collection ``name``, rebuilt when it may be stale."""
        collection = self._collection(name)
        current = self._read_generation()
        if current != self._generation:
            self._indexes.clear()
            self._generation = current
        index = self._indexes.get(name)
        now = time.monotonic()
        if index is not None and now - self._checked.get(name, 0.0) < COUNT_CHECK_S:
            return index  # the token matched; the size backstop ran moments ago
        count = collection.count()
        self._checked[name] = now
        if index is None or len(index) != count:
            index = BM25Index()
            offset = 0
            while offset < count:
                page = collection.get(include=["documents"], limit=_PAGE, offset=offset)
                if not page["ids"]:
                    break
                index.add_many(zip(page["ids"], (d or "" for d in page["documents"])))
                offset += len(page["ids"])
            self._indexes[name] = index
        return index

    # --- writing ------------------------------------------------------------------------------

    @staticmethod
    def _metadata(
        *,
        source: str,
        kind: str,
        provenance: str,
        process: int | str | None,
        conversation: str | None,
        created: float | None,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        if provenance not in PROVENANCES:
            raise ValueError(f"provenance must be 'trusted' or 'untrusted', not {provenance!r}")
        meta: dict[str, Any] = {
            "source": source,
            "kind": kind,
            "provenance": provenance,
            "created": float(created if created is not None else time.time()),
        }
        if process is not None:
            meta["process"] = process
        if conversation is not None:
            meta["conversation"] = conversation
        for key, value in extra.items():
            if value is None:
                continue
            if not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"metadata {key!r} must be a str, int, float or bool, not {type(value).__name__}")
            meta[key] = value
        return meta

    def remember(
        self,
        text: str,
        *,
        collection: str = "memories",
        source: str = "user",
        kind: str = "memory",
        provenance: str = "trusted",
        process: int | str | None = None,
        conversation: str | None = None,
        created: float | None = None,
        **extra: Any,
    ) -> str:
        """Store ``text``; returns its id (12 hex digits)."""
        meta = self._metadata(source=source, kind=kind, provenance=provenance, process=process,
                              conversation=conversation, created=created, extra=extra)
        return self.add_many([text], [meta], collection=collection)[0]

    def add_many(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        *,
        collection: str = "memories",
        embeddings: Any = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Store many texts at once (batched); ``embeddings`` may be given to skip the model.

        Metadata that lacks ``source``, ``kind``, ``provenance`` or ``created`` gets defaults.
        """
        texts = list(texts)
        if not texts:
            return []
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("cannot store an empty text")
        now = time.time()
        default_kind = "memory" if collection == "memories" else "chunk"
        metas = []
        for i in range(len(texts)):
            given = dict(metadatas[i]) if metadatas is not None else {}
            given.setdefault("source", "user")
            given.setdefault("kind", default_kind)
            given.setdefault("provenance", "trusted")
            given.setdefault("created", now)
            metas.append(given)
        new_ids = list(ids) if ids is not None else [uuid.uuid4().hex[:12] for _ in texts]
        if len(new_ids) != len(texts) or (metadatas is not None and len(metadatas) != len(texts)):
            raise ValueError("texts, metadatas and ids must have the same length")
        import numpy as np

        # a float32 array goes to chromadb as it is (lists of Python floats cost a third of an add)
        self._collection(collection)
        if embeddings is None:
            embeddings = self.embedder_for(collection).embed_array(texts)
        vectors = np.asarray(embeddings, dtype=np.float32)
        with self._lock, self._guard("cannot write"):
            self._write(self._collection(collection).add, new_ids, texts, metas, vectors)

            def update() -> None:
                index = self._indexes.get(collection)
                if index is not None:
                    index.add_many(zip(new_ids, texts))

            self._mutated(update)
        return new_ids

    def _write(self, method: Any, ids: Sequence[str], texts: Sequence[str], metas: Sequence[Any], vectors: Any) -> None:
        """``collection.add`` or ``.upsert`` in batches chromadb takes (under the lock and guard)."""
        batch = max(1, min(1000, self._client.get_max_batch_size()))
        for start in range(0, len(texts), batch):
            end = start + batch
            method(ids=list(ids[start:end]), documents=list(texts[start:end]), metadatas=list(metas[start:end]),
                   embeddings=vectors[start:end])

    def forget(self, id: str) -> bool:  # noqa: A002 (the natural name)
        """Delete the entry ``id`` from whichever collection holds it; False when there is none."""
        with self._lock, self._guard("cannot delete"):
            for name, collection in self._collections.items():
                if collection.get(ids=[id], include=[])["ids"]:
                    collection.delete(ids=[id])

                    def update(name: str = name) -> None:
                        index = self._indexes.get(name)
                        if index is not None:
                            index.remove(id)

                    self._mutated(update)
                    return True
        return False

    def forget_many(self, ids: Sequence[str], collection: str = "documents") -> int:
        """Delete ``ids`` from ``collection``; returns how many there were."""
        ids = list(ids)
        if not ids:
            return 0
        with self._lock, self._guard("cannot delete"):
            target = self._collection(collection)
            present: list[str] = []
            for start in range(0, len(ids), _PAGE):
                present.extend(target.get(ids=ids[start:start + _PAGE], include=[])["ids"])
            for start in range(0, len(present), _PAGE):
                target.delete(ids=present[start:start + _PAGE])

            def update() -> None:
                index = self._indexes.get(collection)
                if index is not None:
                    for entry_id in present:
                        index.remove(entry_id)

            if present:
                self._mutated(update)
        return len(present)

    def ids_where(self, where: Mapping[str, Any], collection: str = "documents") -> list[str]:
        """Ids of the entries whose metadata match ``where`` (chromadb's filter syntax)."""
        with self._lock, self._guard("cannot read"):
            return list(self._collection(collection).get(where=dict(where), include=[])["ids"])

    def vectors(self, ids: Sequence[str], collection: str = "documents") -> dict[str, Any]:
        """The stored embeddings of ``ids`` (as they were embedded when stored), by id; an id that
        is gone meanwhile is left out."""
        with self._lock, self._guard("cannot read"):
            got = self._collection(collection).get(ids=list(ids), include=["embeddings"])
        return dict(zip(got["ids"], got["embeddings"]))

    def ids_with_text(self, text: str, collection: str = "documents") -> list[str]:
        """Ids of the entries of ``collection`` whose text is exactly ``text``."""
        with self._lock, self._guard("cannot read"):
            got = self._collection(collection).get(where_document={"$contains": text}, include=["documents"])
        return [i for i, doc in zip(got["ids"], got["documents"]) if doc == text]

    def get(self, id: str) -> Hit | None:  # noqa: A002
        """The entry ``id``, or None."""
        with self._lock, self._guard("cannot read"):
            for name, collection in self._collections.items():
                got = collection.get(ids=[id], include=["documents", "metadatas"])
                if got["ids"]:
                    return Hit(id, got["documents"][0] or "", 0.0, dict(got["metadatas"][0] or {}), name)
        return None

    # --- reading ------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, collection: str = "memories", *, candidates: int | None = None) -> list[Hit]:
        """The ``k`` best entries for ``query``: vector and BM25 rankings fused by RRF.

        ``collection`` is ``"memories"``, ``"documents"`` or ``"all"``. Each ranking contributes
        its best ``candidates`` (default ``max(4k, 20)``).
        """
        if not query or not query.strip() or k <= 0:
            return []
        names = list(COLLECTIONS) if collection == "all" else [collection]
        for name in names:
            self._collection(name)
        depth = candidates or max(4 * k, 20)
        vectors: dict[str, Any] = {}  # one query vector per embedder in use
        for name in names:
            kind = self.kinds[name]
            if kind not in vectors:
                vectors[kind] = self.embedder_for(name).embed_array([query])[0]
        fused: dict[tuple[str, str], float] = {}
        known: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        similarity: dict[tuple[str, str], float] = {}
        with self._lock, self._guard("cannot search"):
            for name in names:
                target = self._collections[name]
                index = self._index(name)
                count = len(index)
                if not count:
                    continue
                result = target.query(
                    query_embeddings=[vectors[self.kinds[name]].tolist()],
                    n_results=min(depth, count),
                    include=["documents", "metadatas", "distances"],
                )
                for rank, entry_id in enumerate(result["ids"][0]):
                    key = (name, entry_id)
                    fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
                    known[key] = (result["documents"][0][rank] or "", dict(result["metadatas"][0][rank] or {}))
                    similarity[key] = 1.0 - float(result["distances"][0][rank])
                for rank, (entry_id, _score) in enumerate(index.search(query, depth)):
                    key = (name, entry_id)
                    fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
            best = sorted(fused.items(), key=lambda item: -item[1])[:k]
            missing: dict[str, list[str]] = {}
            for (name, entry_id), _ in best:
                if (name, entry_id) not in known:
                    missing.setdefault(name, []).append(entry_id)
            for name, entry_ids in missing.items():
                got = self._collections[name].get(ids=entry_ids, include=["documents", "metadatas"])
                for entry_id, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                    known[(name, entry_id)] = (text or "", dict(meta or {}))
        hits = []
        for (name, entry_id), score in best:
            if (name, entry_id) not in known:
                continue  # deleted between the rankings and the fetch
            text, meta = known[(name, entry_id)]
            hits.append(Hit(entry_id, text, score, meta, name, similarity.get((name, entry_id))))
        return hits

    def count(self, collection: str = "memories") -> int:
        with self._lock, self._guard("cannot read"):
            return int(self._collection(collection).count())

    def stats(self) -> dict[str, Any]:
        """Entries per collection, the folder and its size on disk, the embedding model."""
        with self._lock, self._guard("cannot read"):
            counts = {name: int(c.count()) for name, c in self._collections.items()}
        size = 0
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                with contextlib.suppress(OSError):
                    size += os.path.getsize(os.path.join(root, name))
        return {
            "path": self.where,
            "collections": counts,
            "total": sum(counts.values()),
            "bytes": size,
            "embedding_model": MODEL_NAMES["minilm"],
            "embedders": {name: MODEL_NAMES[kind] for name, kind in self.kinds.items()},
        }

    def __repr__(self) -> str:
        return f"DiskStore({str(self.path)!r})"
