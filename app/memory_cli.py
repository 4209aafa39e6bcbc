"""`llmos memory`: the long-term memory store on the command line (no model is loaded).

    llmos memory add PATH...              ingest .txt/.md/.html/.pdf files or folders (progress on stderr)
    llmos memory search QUERY [-k N] [--json] [--in memories|documents|all]
    llmos memory forget ID
    llmos memory stats [--json]

The store is ``<data_dir>/devices/memory/chroma``, the same folder the ``memory`` device uses.
Wiring in app/cli.py: ``memory_cli.add_parser(sub)`` in ``_parser()``, and in ``main()``
``if args.command == "memory": return memory_cli.run(args, config)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmos.kernel.config import Config

__all__ = ["add_parser", "run", "store_path"]

EXIT_OK, EXIT_ERROR = 0, 1


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `memory` and its subcommands to the `llmos` parser's subparsers."""
    memory = sub.add_parser("memory", help="long-term memory: add files, search, forget, stats")
    msub = memory.add_subparsers(dest="memory_command", metavar="{add,search,forget,stats}")
    add = msub.add_parser("add", help="ingest .txt, .md, .html and .pdf files (or folders)")
    add.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    search = msub.add_parser("search", help="hybrid (vector + keyword) search")
    search.add_argument("query", help="what to look for")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    search.add_argument("--in", dest="collection", choices=["memories", "documents", "all"], default="all",
                        help="which collection (default all)")
    search.add_argument("--json", action="store_true", help="machine-readable output")
    forget = msub.add_parser("forget", help="delete one entry by id")
    forget.add_argument("id", help="the entry's id (as search shows it)")
    stats = msub.add_parser("stats", help="how much is stored, and where")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    return memory


def store_path(config: Config) -> Path:
    """The store folder: the memory device's own folder under the data directory."""
    return Path(config.resolved_data_dir()) / "devices" / "memory" / "chroma"


def _error(message: str) -> int:
    print(f"llmos: {message}", file=sys.stderr)
    return EXIT_ERROR


def run(args: argparse.Namespace, config: Config) -> int:
    """Run a `memory` subcommand; store and ingest errors print one line and return 1."""
    from llmos.memory.disk import DiskStore, StoreError
    from llmos.memory.embedder import EmbedderError
    from llmos.memory.ingest import IngestError

    command = getattr(args, "memory_command", None)
    if command is None:
        return _error("memory: give a subcommand: add, search, forget or stats (llmos memory -h)")
    try:
        store = DiskStore(store_path(config))
        try:
            if command == "add":
                return _add(args, store)
            if command == "search":
                return _search(args, store)
            if command == "forget":
                if store.forget(args.id):
                    print(f"forgot {args.id}")
                    return EXIT_OK
                return _error(f"no entry has the id {args.id!r}")
            if command == "stats":
                return _stats(args, store)
        finally:
            store.close()
    except (StoreError, EmbedderError, IngestError) as exc:
        return _error(str(exc))
    return _error(f"memory: unknown subcommand {command!r}")


def _add(args: argparse.Namespace, store: Any) -> int:
    from llmos.memory.ingest import IngestProgress, ingest

    tty = sys.stderr.isatty()

    def progress(p: IngestProgress) -> None:
        name = Path(p.path).name
        share = f"{100 * p.bytes_done // max(1, p.bytes_total):3d}%"
        line = f"[{p.file_index}/{p.files}] {name}: {p.chunks} chunks, {share}"
        if p.done:
            line = f"[{p.file_index}/{p.files}] {name}: {p.chunks} chunks, done"
        if tty:
            print(f"\r\033[K{line}", end="\n" if p.done else "", file=sys.stderr, flush=True)
        elif p.done:
            print(line, file=sys.stderr, flush=True)

    report = ingest(args.paths, store, progress=progress, errors="skip")
    for path, message in report.errors.items():
        print(f"llmos: skipped {message}", file=sys.stderr)
    rate = report.chunks / report.seconds if report.seconds > 0 else 0.0
    print(f"added {report.chunks} chunks from {len(report.files)} file(s) in {report.seconds:.1f} s "
          f"({rate:.0f} chunks/s)", file=sys.stderr)
    return EXIT_ERROR if report.errors else EXIT_OK


def _search(args: argparse.Namespace, store: Any) -> int:
    hits = store.search(args.query, k=max(1, args.k), collection=args.collection)
    if args.json:
        print(json.dumps([
            {"id": h.id, "text": h.text, "score": h.score, "similarity": h.similarity,
             "collection": h.collection, "metadata": h.metadata}
            for h in hits
        ], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not hits:
        print("no results (the store is empty)", file=sys.stderr)
    for h in hits:
        origin = h.metadata.get("source", "")
        if h.collection == "documents":
            origin = f"{Path(str(origin)).name} #{h.metadata.get('chunk', '?')}"
        sim = f"{h.similarity:.2f}" if h.similarity is not None else " -  "
        text = " ".join(h.text.split())
        print(f"{h.id}  sim {sim}  {h.collection[:3]}  {origin}")
        print(f"    {text[:300]}{'...' if len(text) > 300 else ''}")
    return EXIT_OK


def _stats(args: argparse.Namespace, store: Any) -> int:
    stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return EXIT_OK
    print(f"store:     {stats['path']}")
    for name, count in stats["collections"].items():
        print(f"{name + ':':<10} {count}")
    print(f"on disk:   {stats['bytes'] / 1e6:.1f} MB")
    print(f"embedding: {stats['embedding_model']}")
    return EXIT_OK
