"""`llmos memory`: the long-term memory store on the command line (no model is loaded).

    llmos memory add PATH...              ingest files or folders (a progress bar on a TTY)
    llmos memory add --watch DIR...       ingest, then keep the folders in sync until Ctrl-C
    llmos memory search QUERY [-k N] [--json] [--in memories|documents|all]
    llmos memory forget ID
    llmos memory stats [--json]
    llmos memory ram [--process ID] [--list] [--json]   a process's context window, from the journal
    llmos memory reindex                  rebuild the store from the journal and the original files

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
    msub = memory.add_subparsers(dest="memory_command", metavar="{add,search,forget,stats,ram,reindex}")
    add = msub.add_parser("add", help="ingest documents: any text file, HTML, PDF, .docx, .odt, .epub, .eml, "
                                      "or folders of them")
    add.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (walked, honouring .gitignore)")
    add.add_argument("--watch", action="store_true",
                     help="keep the folders in sync: ingest new and changed files, forget deleted ones, until Ctrl-C")
    add.add_argument("--interval", type=float, default=2.0, metavar="S",
                     help="with --watch: seconds between scans (default 2)")
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
    ram = msub.add_parser("ram", help="the pages in a process's context window, and what was paged out and why")
    ram.add_argument("--process", metavar="ID",
                     help="a process number (as --list shows) or a conversation id; default: the latest")
    ram.add_argument("--list", action="store_true", help="list the recorded processes instead")
    ram.add_argument("--json", action="store_true", help="machine-readable output")
    msub.add_parser("reindex", help="rebuild a missing or corrupt store from the journal and the original files")
    return memory


def store_path(config: Config) -> Path:
    """The store folder: the memory device's own folder under the data directory."""
    return Path(config.resolved_data_dir()) / "devices" / "memory" / "chroma"


def _error(message: str) -> int:
    print(f"llmos: {message}", file=sys.stderr)
    return EXIT_ERROR


REINDEX_HINT = "`llmos memory reindex` rebuilds it from the journal and the original files"


def _journal(config: Config) -> Any:
    from llmos.app.boot import journal_path
    from llmos.memory.journal import Journal

    return Journal(journal_path(config))


def run(args: argparse.Namespace, config: Config) -> int:
    """Run a `memory` subcommand; store, journal and ingest errors print one line and return 1."""
    from llmos.memory.disk import DiskStore, EmbedderUnavailable, StoreError
    from llmos.memory.embedder import EmbedderError
    from llmos.memory.ingest import IngestError
    from llmos.memory.journal import JournalError

    command = getattr(args, "memory_command", None)
    if command is None:
        return _error("memory: give a subcommand: add, search, forget, stats, ram or reindex (llmos memory -h)")
    try:
        if command == "ram":
            return _ram(args, config)
        if command == "reindex":
            return _reindex(config)
        path = store_path(config)
        url = config.chroma_url or None
        if command != "add" and not url and not path.exists():
            lost = _journaled_entries(config)
            if lost:
                return _error(f"memory store {path} is missing but the journal has {lost} entries for it; "
                              f"{REINDEX_HINT}")
        try:
            store = DiskStore(path, url=url, document_embedder=config.document_embedder)
        except EmbedderUnavailable as exc:  # the store is fine: reindex would not help
            return _error(str(exc))
        except StoreError as exc:
            return _error(str(exc) if url else f"{exc}; {REINDEX_HINT}")
        if store.migrated:
            print(f"llmos: re-embedded {store.migrated} document chunk{'s' * (store.migrated != 1)} for document_embedder="
                  f"{config.document_embedder}", file=sys.stderr)
        try:
            if command == "add":
                return _add(args, store, config)
            if command == "search":
                return _search(args, store)
            if command == "forget":
                return _forget(args, store, config)
            if command == "stats":
                return _stats(args, store)
        finally:
            store.close()
    except (StoreError, EmbedderError, IngestError, JournalError) as exc:
        return _error(str(exc))
    return _error(f"memory: unknown subcommand {command!r}")


def _journaled_entries(config: Config) -> int:
    """How many things the journal says went into the store (0 when there is no journal)."""
    from llmos.app.boot import journal_path

    if not journal_path(config).exists():
        return 0
    journal = _journal(config)
    try:
        return len(journal.ingested()) + len(journal.paged_out()) + len(journal.memory_calls())
    finally:
        journal.close()


def _forget(args: argparse.Namespace, store: Any, config: Config) -> int:
    entry = store.get(args.id)
    if entry is None or not store.forget(args.id):
        return _error(f"no entry has the id {args.id!r}")
    journal = _journal(config)  # so that `llmos memory reindex` does not bring it back
    try:
        journal.record_forget(entry.id, entry.text)
    finally:
        journal.close()
    print(f"forgot {args.id}")
    return EXIT_OK


# --- add: ingest with a progress bar --------------------------------------------------------

BAR_WIDTH = 24


def progress_line(p: Any, elapsed: float, width: int = BAR_WIDTH) -> str:
    """One line of the progress bar: file n of m, the bar, percent, chunks and their rate."""
    share = 1.0 if p.done else p.bytes_done / max(1, p.bytes_total)
    filled = min(width, int(round(share * width)))
    bar = "#" * filled + "-" * (width - filled)
    rate = p.chunks / elapsed if elapsed > 0 else 0.0
    name = Path(p.path).name
    name = name if len(name) <= 32 else name[:31] + "…"
    return f"[{p.file_index}/{p.files}] {name} [{bar}] {100 * share:3.0f}%  {p.chunks} chunks  {rate:.0f}/s"


def _add(args: argparse.Namespace, store: Any, config: Config) -> int:
    import time

    from llmos.memory.ingest import IngestProgress, ingest

    tty = sys.stderr.isatty()
    started: dict[int, float] = {}

    def progress(p: IngestProgress) -> None:
        if not tty:
            return  # quiet when piped: only the summary line below
        begun = started.setdefault(p.file_index, time.perf_counter())
        line = progress_line(p, time.perf_counter() - begun)
        print(f"\r\033[K{line}", end="\n" if p.done else "", file=sys.stderr, flush=True)

    if args.watch:
        return _watch(args, store, config, progress)
    report = ingest(args.paths, store, progress=progress, errors="skip")
    _journal_ingests(config, report.files)
    for message in [*report.skipped.values(), *report.errors.values()]:
        print(f"llmos: skipped {message}", file=sys.stderr)
    rate = report.chunks / report.seconds if report.seconds > 0 else 0.0
    same = f", {len(report.unchanged)} unchanged" if report.unchanged else ""
    print(f"added {report.chunks} chunks from {len(report.files)} file(s){same} in {report.seconds:.1f} s "
          f"({rate:.0f} chunks/s)", file=sys.stderr)
    return EXIT_ERROR if report.errors else EXIT_OK


def _journal_ingests(config: Config, files: dict[str, int]) -> None:
    """The journal keeps each ingested file, so that `llmos memory reindex` can read it again."""
    if not files:
        return
    journal = _journal(config)
    try:
        for source, chunks in files.items():
            path = Path(source)
            journal.record_ingest(str(path.resolve()), path.suffix.lower().lstrip("."), chunks, path.stat().st_size)
    finally:
        journal.close()


def _watch(args: argparse.Namespace, store: Any, config: Config, progress: Any) -> int:
    """Scan, report each change in one line, and scan again until SIGINT or SIGTERM."""
    import signal
    import threading

    from llmos.memory.watch import FolderWatch, WatchChanges

    watch = FolderWatch(store, args.paths, progress)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def report(changes: WatchChanges) -> None:
        _journal_ingests(config, {**changes.added, **changes.updated})
        for verb, files in (("added", changes.added), ("updated", changes.updated)):
            for source, chunks in files.items():
                print(f"{verb} {source} ({chunks} chunks)", file=sys.stderr, flush=True)
        for source in changes.removed:
            print(f"removed {source}", file=sys.stderr, flush=True)
        for message in changes.skipped.values():
            print(f"llmos: skipped {message}", file=sys.stderr, flush=True)

    print(f"watching {', '.join(str(f) for f in watch.folders)} (every {args.interval:g} s; Ctrl-C stops)",
          file=sys.stderr, flush=True)
    watch.run(stop, args.interval, report)
    print("stopped watching", file=sys.stderr)
    return EXIT_OK


# --- ram: what a process's context window holds ----------------------------------------------


def _ram(args: argparse.Namespace, config: Config) -> int:
    journal = _journal(config)
    try:
        if args.list:
            rows = journal.processes(50)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
                return EXIT_OK
            if not rows:
                print("no processes recorded yet", file=sys.stderr)
            for row in rows:
                conv = (row["conversation"] or "")[:8] or "-"
                print(f"{row['process']:>5}  pid {row['pid']:<3} {row['name'] or '?':<8} {conv:<8}  "
                      f"{row['updated'][:19].replace('T', ' ')}  {row['title'] or ''}")
            return EXIT_OK
        info = journal.ram(args.process)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return EXIT_OK
    print("\n".join(format_ram(info)))
    return EXIT_OK


def format_ram(info: dict[str, Any]) -> list[str]:
    """The RAM report as a table a person can read."""
    conv = info["conversation"] or ""
    title = f' "{info["title"]}"' if info.get("title") else ""
    out = [f"process {info['process']} (pid {info['pid']}, {info['name'] or '?'})"
           + (f" of conversation {conv[:8]}{title}" if conv else "")
           + f", as of {info['updated'][:19].replace('T', ' ')} UTC"]
    ram = info["ram"]
    if ram is None:
        out.append("no RAM snapshot yet (one is taken after each turn)")
    else:
        pinned = sum(p["tokens"] for p in ram["pages"] if p["pinned"])
        out.append(f"resident: {len(ram['pages'])} pages, {ram['tokens']} tokens of a {ram['budget']}-token budget "
                   f"(context {ram['n_ctx']}; {pinned} pinned)")
        out.append("")
        out.append(f"{'#':>3}  {'kind':<9} {'tokens':>6}  {'pinned':<6}  content")
        for page in ram["pages"]:
            what = f"{page['call']}: " if page["call"] else ""
            trust = "" if page["trusted"] else " [untrusted]"
            out.append(f"{page['index']:>3}  {page['kind']:<9} {page['tokens']:>6}  {'yes' if page['pinned'] else '':<6}  "
                       f"{what}{page['preview']}{trust}")
    out.append("")
    if not info["paging"]:
        out.append("paging: nothing paged out or in yet")
    else:
        out.append("paging:")
        for record in info["paging"]:
            when = record["created"][:19].replace("T", " ")
            tokens = (f", {record['tokens_before']} -> {record['tokens_after']} tokens"
                      if record["direction"] == "out" else "")
            verb = "out to disk" if record["direction"] == "out" else "in from disk"
            out.append(f"  {when}  {verb}: {record['messages']} message(s){tokens}, {record['reason']}")
            for summary in record["summaries"]:
                line = " ".join(summary.split())
                out.append(f"      - {line[:150]}{'…' if len(line) > 150 else ''}")
    return out


# --- reindex ---------------------------------------------------------------------------------


def _reindex(config: Config) -> int:
    import time

    if config.chroma_url:
        return _error(f"memory: reindex rebuilds the local store; the Chroma server at {config.chroma_url} "
                      "keeps its own (unset chroma_url to rebuild the local one)")

    from llmos.memory.ingest import IngestProgress
    from llmos.memory.reindex import reindex

    tty = sys.stderr.isatty()
    began = time.perf_counter()

    def progress(p: IngestProgress) -> None:
        if tty:
            line = progress_line(p, time.perf_counter() - began)
            print(f"\r\033[K{line}", end="\n" if p.done else "", file=sys.stderr, flush=True)

    journal = _journal(config)
    try:
        report = reindex(store_path(config), journal, progress, document_embedder=config.document_embedder)
    finally:
        journal.close()
    if report.moved_aside:
        print(f"llmos: the old store was moved aside to {report.moved_aside}", file=sys.stderr)
    for message in report.errors.values():
        print(f"llmos: not re-read: {message}", file=sys.stderr)
    print(f"rebuilt {report.store}: {report.memories} memories, {report.summaries} paged-out turns, "
          f"{report.chunks} chunks from {len(report.files)} file(s) in {report.seconds:.1f} s", file=sys.stderr)
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
        label = "  [untrusted]" if h.metadata.get("provenance") == "untrusted" else ""
        print(f"{h.id}  sim {sim}  {h.collection[:3]}  {origin}{label}")
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
