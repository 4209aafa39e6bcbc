"""`llmos conversations`, `llmos export` and `llmos chat --resume`: the journal on the command line.

    llmos conversations [--json] [--limit N]       the latest conversations
    llmos export ID [--format md|json] [-o FILE]   one conversation (ID: a unique prefix is enough)
    llmos chat --resume ID                         continue a conversation

None of these loads a model except `chat`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmos.kernel.config import Config
from llmos.memory.journal import Journal, JournalError

__all__ = ["JournalError", "add_parsers", "run", "resume"]


def add_parsers(sub: Any) -> None:
    """Add the `conversations` and `export` subcommands to the `llmos` parser's subparsers."""
    conversations = sub.add_parser("conversations", help="list the journaled conversations")
    conversations.add_argument("--json", action="store_true", help="machine-readable output")
    conversations.add_argument("--limit", type=int, default=20, help="how many, latest first (default 20)")
    export = sub.add_parser("export", help="export one conversation")
    export.add_argument("id", help="conversation id, or a unique prefix of one")
    export.add_argument("--format", choices=["md", "json"], default="md", help="Markdown (default) or JSON")
    export.add_argument("-o", "--output", help="write to this file instead of standard output")


def _journal(config: Config) -> Journal:
    from llmos.app.boot import journal_path

    return Journal(journal_path(config))


def run(args: argparse.Namespace, config: Config) -> int:
    """Run `conversations` or `export`; JournalError propagates (the CLI prints one line, exits 1)."""
    journal = _journal(config)
    try:
        if args.command == "conversations":
            rows = journal.conversations(args.limit)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
            elif not rows:
                print("no conversations yet", file=sys.stderr)
            for row in rows if not args.json else []:
                print(f"{row['id'][:8]}  {row['updated'][:16].replace('T', ' ')}  "
                      f"{row['messages']:>4} msgs  {row['title'] or '(untitled)'}")
            return 0
        text = journal.export(args.id, args.format)
        if args.output:
            try:
                Path(args.output).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise JournalError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        else:
            sys.stdout.write(text)
        return 0
    finally:
        journal.close()


def resume(config: Config, ident: str) -> dict[str, Any]:
    """``Kernel.spawn`` keyword arguments that continue conversation ``ident``:
    ``{"history": [...], "conversation": full_id}``. Raises JournalError for an unknown id."""
    journal = _journal(config)
    try:
        cid = journal.resolve(ident)
        info = journal.conversation(cid)
        history = journal.messages(cid)
        cut = journal.partial_answers(cid)
    finally:
        journal.close()
    print(f"llmos: resuming {cid[:8]} \"{info['title']}\" ({len(history)} messages)", file=sys.stderr)
    if cut and cut[-1] == len(history):
        print("llmos: the last answer was cut off (llmos stopped while it was being written); "
              "what it had said is kept", file=sys.stderr)
    return {"history": history, "conversation": cid}
