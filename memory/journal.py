"""The journal: every conversation, message and system call, in SQLite, so nothing is lost.

A :class:`Journal` is an :class:`~llmos.kernel.events.EventBus` observer. It is subscribed first
(``app/boot.py``), so a message is committed before any other observer shows it.

Durability. The database runs in WAL mode with ``synchronous=FULL``: each message is its own
transaction, and the commit returns only after the WAL has been fsynced. A SIGKILL of the process
cannot lose a committed message even with ``synchronous=NORMAL`` (the commit's WAL frames are in the
OS page cache, which survives the process); FULL also survives a power cut or an OS crash, which
NORMAL does not (it may roll back the last commits). The price is one fsync per message, a few
per turn, negligible next to the model.

A streaming answer is committed at every piece, so a crash of the process (a native crash in
llama.cpp, a SIGKILL) loses none of what was shown: those commits run with ``synchronous=NORMAL``
(written to the WAL, no fsync: the OS page cache outlives the process), and every
PARTIAL_PIECES pieces or PARTIAL_SECONDS one is fsynced, so a power cut loses at most that much.

Schema changes are append-only named migrations (``MIGRATIONS``): each is applied once, in order,
in one transaction together with its row in the ``migrations`` table. Never edit or reorder an
entry; add a new one.

Conversation ids are uuid4 hex strings; every method that takes an id accepts a unique prefix of
one (like git).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmos.kernel import events
from llmos.kernel.process import Message
from llmos.kernel.devices import one_line

TITLE_CHARS = 60
# A streaming answer is written to its (partial) row at every piece; every this many pieces or
# seconds, whichever comes first, that write is fsynced: a power cut loses at most that much of it.
PARTIAL_PIECES = 16
PARTIAL_SECONDS = 0.25

# (name, sql). Append only: never edit, rename or reorder an entry that has shipped.
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_conversations_and_messages", """
        CREATE TABLE conversations (
            id      TEXT PRIMARY KEY,
            title   TEXT NOT NULL DEFAULT '',
            name    TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE TABLE messages (
            conversation TEXT NOT NULL REFERENCES conversations(id),
            seq          INTEGER NOT NULL,
            role         TEXT NOT NULL,
            content      TEXT NOT NULL,
            call         TEXT,
            trusted      INTEGER NOT NULL DEFAULT 1,
            created      TEXT NOT NULL,
            PRIMARY KEY (conversation, seq)
        );
        CREATE INDEX conversations_by_updated ON conversations(updated);
    """),
    ("0002_syscalls", """
        CREATE TABLE syscalls (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation TEXT,
            pid          INTEGER NOT NULL,
            call_id      INTEGER NOT NULL,
            device       TEXT NOT NULL,
            call         TEXT NOT NULL,
            arguments    TEXT NOT NULL,
            result       TEXT,
            ok           INTEGER NOT NULL,
            error        TEXT,
            trusted      INTEGER NOT NULL,
            seconds      REAL NOT NULL,
            created      TEXT NOT NULL
        );
        CREATE INDEX syscalls_by_conversation ON syscalls(conversation);
    """),
    # The conversation tree (desktop shell): a branch is a conversation that copied the first
    # ``forked_at`` messages of its ``parent`` and went on differently (an edit or a regenerate).
    ("0003_conversation_branches", """
        ALTER TABLE conversations ADD COLUMN parent TEXT;
        ALTER TABLE conversations ADD COLUMN forked_at INTEGER;
        CREATE INDEX conversations_by_parent ON conversations(parent);
    """),
    # memory (issue 3): the RAM inspector's view of each kernel process, what was paged and why,
    # answers journaled while they stream (partial = 1 until final), files ingested into the store
    ("0004_memory_ram_paging_partial_ingest", """
        CREATE TABLE processes (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation TEXT,
            pid          INTEGER NOT NULL,
            name         TEXT NOT NULL,
            started      TEXT NOT NULL,
            updated      TEXT NOT NULL,
            ram          TEXT
        );
        CREATE INDEX processes_by_conversation ON processes(conversation);
        CREATE TABLE paging (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            process       INTEGER NOT NULL REFERENCES processes(id),
            conversation  TEXT,
            direction     TEXT NOT NULL,
            reason        TEXT NOT NULL,
            messages      INTEGER NOT NULL,
            tokens_before INTEGER NOT NULL,
            tokens_after  INTEGER NOT NULL,
            summaries     TEXT NOT NULL,
            created       TEXT NOT NULL
        );
        CREATE INDEX paging_by_process ON paging(process);
        ALTER TABLE messages ADD COLUMN partial INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE ingested (
            source   TEXT PRIMARY KEY,
            format   TEXT NOT NULL,
            chunks   INTEGER NOT NULL,
            bytes    INTEGER NOT NULL,
            created  TEXT NOT NULL
        );
        CREATE TABLE forgotten (
            id       TEXT PRIMARY KEY,
            text     TEXT NOT NULL,
            created  TEXT NOT NULL
        );
    """),
]

_NAME = re.compile(r"^[0-9a-z_]+$")


class JournalError(Exception):
    """A journal that cannot be used (corrupt, newer, unknown id); the message is one line."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _statements(sql: str) -> list[str]:
    """Split a migration into complete statements (sqlite3.complete_statement knows triggers)."""
    out: list[str] = []
    buf = ""
    for part in sql.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement in a migration: {buf.strip()[:80]!r}")
    return out


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 3].rstrip() + "..."




@dataclass
class _Streaming:
    """An answer being streamed by one process: its journal row once written, its text so far."""

    conversation: str
    seq: int | None = None
    pieces: list[str] = field(default_factory=list)
    pending: int = 0
    flushed: float = 0.0


class Journal:
    """Conversations, messages and system calls in ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path, *, check: bool = True, clock: Callable[[], str] = _now) -> None:
        self.path = Path(path)
        self._clock = clock  # the time written on each change (UTC ISO 8601); tests give their own
        self._lock = threading.Lock()
        self._conversations: dict[int, str] = {}  # pid -> conversation, for SyscallFinished
        self._processes: dict[int, int] = {}  # pid -> row of the processes table (this kernel's run)
        self._streaming: dict[int, _Streaming] = {}  # pid -> the answer it is streaming
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"journal {self.path}: cannot open: {one_line(exc, None)}") from None
        try:
            self._db.execute("PRAGMA busy_timeout = 10000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"cannot switch to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            if check:
                problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError("damaged: " + "; ".join(problems))
            self._migrate()
        except JournalError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise JournalError(
                f"journal {self.path} is not a usable SQLite database ({one_line(exc, None)}); "
                "move it aside to start a new one"
            ) from None

    # --- schema -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS migrations "
                             "(name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
            known = [name for name, _ in MIGRATIONS]
            applied = {row[0] for row in self._db.execute("SELECT name FROM migrations")}
            unknown = applied - set(known)
            if unknown:
                raise JournalError(f"journal {self.path} was written by a newer llmos "
                                   f"(unknown migrations: {', '.join(sorted(unknown))})")
            for name, sql in MIGRATIONS:
                if name in applied:
                    continue
                assert _NAME.match(name), name
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    # another process may have applied it while we waited for the write lock
                    if self._db.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                        self._db.execute("COMMIT")
                        continue
                    for statement in _statements(sql):
                        self._db.execute(statement)
                    self._db.execute("INSERT INTO migrations (name, applied) VALUES (?, ?)", (name, _now()))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def applied_migrations(self) -> list[tuple[str, str]]:
        """(name, applied) rows of the ``migrations`` table, in the order they were applied."""
        with self._lock:
            return [tuple(r) for r in self._db.execute("SELECT name, applied FROM migrations ORDER BY rowid")]

    def schema(self) -> list[tuple[str, str]]:
        """(name, sql) of every table and index: what a migration test compares."""
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")]

    def integrity_check(self) -> str:
        """``"ok"`` when SQLite finds the file sound."""
        with self._lock:
            return "; ".join(row[0] for row in self._db.execute("PRAGMA integrity_check"))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing: the EventBus observer ------------------------------------------------------

    def __call__(self, event: events.Event) -> None:
        self.observe(event)

    def observe(self, event: events.Event) -> None:
        """Record ``event`` if it is worth keeping; each record is committed before this returns."""
        if isinstance(event, events.Token):
            self._stream(event)
        elif isinstance(event, events.MessageAppended):
            message = Message(event.role, event.content, event.call, event.trusted)
            streaming = self._streaming.pop(event.pid, None)
            if streaming is not None and streaming.seq is not None and event.role == "assistant" and not event.call:
                self._finish_partial(streaming, message.content)
            else:
                self.append(event.conversation, message, pid=event.pid)
        elif isinstance(event, events.ProcessCreated):
            if event.conversation:
                self._conversations[event.pid] = event.conversation
                if not event.resumed:
                    self._transaction(lambda now: self._ensure_conversation(event.conversation, event.name, now))
            self._new_process(event.pid, event.name, event.conversation)
        elif isinstance(event, events.SyscallFinished):
            self._record_syscall(event)
        elif isinstance(event, events.Paged):
            self._record_paging(event)
        elif isinstance(event, events.RamSnapshot):
            self._record_ram(event)
        elif isinstance(event, (events.TurnFinished, events.ProcessFailed)):
            self._streaming.pop(event.pid, None)  # a cut answer keeps its row, marked partial

    def _transaction(self, work: Any, *, fsync: bool = True) -> Any:
        """Run ``work(now)`` in one transaction; ``fsync=False`` commits it to the WAL without
        waiting for the disk (it survives the process, not a power cut, until the next fsync)."""
        with self._lock:
            if not fsync:
                self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    value = work(self._clock())
                    self._db.execute("COMMIT")
                    return value
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                if not fsync:
                    self._db.execute("PRAGMA synchronous = FULL")

    def _ensure_conversation(self, conversation: str, name: str, now: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO conversations (id, name, created, updated) VALUES (?, ?, ?, ?)",
                         (conversation, name, now, now))

    def append(self, conversation: str, message: Message, *, pid: int | None = None, partial: bool = False) -> int:
        """Add ``message`` at the end of ``conversation`` (created if new); returns its seq.
        ``partial``: an answer still being streamed (see :meth:`update_partial`)."""
        if pid is not None:
            self._conversations.setdefault(pid, conversation)

        def work(now: str) -> int:
            self._ensure_conversation(conversation, "", now)
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation = ?",
                                   (conversation,)).fetchone()[0]
            self._db.execute(
                "INSERT INTO messages (conversation, seq, role, content, call, trusted, created, partial) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation, seq, message.role, message.content, message.call, int(message.trusted), now,
                 int(partial)),
            )
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation))
            if message.role == "user":
                self._db.execute("UPDATE conversations SET title = ? WHERE id = ? AND title = ''",
                                 (_title(message.content), conversation))
            return seq

        return self._transaction(work)

    def update_partial(self, conversation: str, seq: int, content: str, *, final: bool = False,
                       fsync: bool = True) -> None:
        """Rewrite the streamed answer at ``seq``; ``final`` clears its partial mark; ``fsync``:
        see :meth:`_transaction`."""
        def work(now: str) -> None:
            self._db.execute("UPDATE messages SET content = ?, partial = ? WHERE conversation = ? AND seq = ?",
                             (content, 0 if final else 1, conversation, seq))
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation))

        self._transaction(work, fsync=fsync or final)

    def _stream(self, event: events.Token) -> None:
        """A piece of an answer: commit the answer so far, fsynced every PARTIAL_PIECES pieces or
        PARTIAL_SECONDS seconds (see the module's doc)."""
        conversation = self._conversations.get(event.pid)
        if not conversation:
            return
        streaming = self._streaming.setdefault(event.pid, _Streaming(conversation))
        streaming.pieces.append(event.text)
        streaming.pending += 1
        now = time.monotonic()
        fsync = streaming.pending >= PARTIAL_PIECES or now - streaming.flushed >= PARTIAL_SECONDS
        text = "".join(streaming.pieces).strip()
        if streaming.seq is None:
            streaming.seq = self.append(conversation, Message("assistant", text), pid=event.pid, partial=True)
            fsync = True
        else:
            self.update_partial(conversation, streaming.seq, text, fsync=fsync)
        if fsync:
            streaming.pending, streaming.flushed = 0, now

    def _finish_partial(self, streaming: _Streaming, content: str) -> None:
        assert streaming.seq is not None
        self.update_partial(streaming.conversation, streaming.seq, content, final=True)

    def _new_process(self, pid: int, name: str, conversation: str) -> int:
        def work(now: str) -> int:
            cursor = self._db.execute(
                "INSERT INTO processes (conversation, pid, name, started, updated) VALUES (?, ?, ?, ?, ?)",
                (conversation or None, pid, name, now, now))
            return int(cursor.lastrowid)

        self._processes[pid] = self._transaction(work)
        return self._processes[pid]

    def _process_row(self, pid: int) -> int:
        """The processes row of ``pid`` (made now if the journal was attached after the spawn)."""
        row = self._processes.get(pid)
        return row if row is not None else self._new_process(pid, "", self._conversations.get(pid, ""))

    def _record_paging(self, event: events.Paged) -> None:
        row = self._process_row(event.pid)
        conversation = self._conversations.get(event.pid)

        def work(now: str) -> None:
            self._db.execute(
                "INSERT INTO paging (process, conversation, direction, reason, messages, tokens_before, "
                "tokens_after, summaries, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row, conversation, event.direction, event.reason, event.messages, event.tokens_before,
                 event.tokens_after, json.dumps(list(event.summaries), ensure_ascii=False), now))
            self._db.execute("UPDATE processes SET updated = ? WHERE id = ?", (now, row))

        self._transaction(work)

    def _record_ram(self, event: events.RamSnapshot) -> None:
        row = self._process_row(event.pid)
        report = json.dumps(event.report.as_dict(), ensure_ascii=False, default=str)
        self._transaction(lambda now: self._db.execute(
            "UPDATE processes SET ram = ?, updated = ? WHERE id = ?", (report, now, row)))

    def record_ingest(self, source: str, fmt: str, chunks: int, size: int) -> None:
        """A file was ingested into the memory store (``llmos memory reindex`` reads it again)."""
        self._transaction(lambda now: self._db.execute(
            "INSERT OR REPLACE INTO ingested (source, format, chunks, bytes, created) VALUES (?, ?, ?, ?, ?)",
            (source, fmt, int(chunks), int(size), now)))

    def record_forget(self, entry_id: str, text: str) -> None:
        """An entry was deleted from the memory store (by ``llmos memory forget``): a reindex
        must not bring it back."""
        self._transaction(lambda now: self._db.execute(
            "INSERT OR REPLACE INTO forgotten (id, text, created) VALUES (?, ?, ?)", (entry_id, text, now)))

    def _record_syscall(self, event: events.SyscallFinished) -> None:
        conversation = self._conversations.get(event.pid)

        def work(now: str) -> None:
            self._db.execute(
                "INSERT INTO syscalls (conversation, pid, call_id, device, call, arguments, result, ok, error, "
                "trusted, seconds, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation, event.pid, event.call_id, event.device, event.call,
                 json.dumps(event.arguments, ensure_ascii=False, default=str),
                 json.dumps(event.result, ensure_ascii=False, default=str), int(event.ok), event.error,
                 int(event.trusted), float(event.seconds), now),
            )

        self._transaction(work)

    # --- reading -------------------------------------------------------------------------------

    def resolve(self, ident: str) -> str:
        """The full id of the one conversation whose id starts with ``ident``."""
        ident = ident.strip().lower()
        if not ident:
            raise JournalError("give a conversation id (or a unique prefix of one)")
        with self._lock:
            rows = [r[0] for r in self._db.execute(
                "SELECT id FROM conversations WHERE substr(id, 1, ?) = ? ORDER BY updated DESC LIMIT 6",
                (len(ident), ident))]
        if not rows:
            raise JournalError(f"no conversation {ident!r} in the journal {self.path}")
        if len(rows) > 1:
            more = "+" if len(rows) > 5 else ""
            raise JournalError(f"conversation id {ident!r} is ambiguous: it matches "
                               f"{', '.join(r[:12] for r in rows[:5])}{more}; give more characters")
        return rows[0]

    def conversations(self, limit: int | None = 20, *, include_empty: bool = False) -> list[dict[str, Any]]:
        """The latest conversations first: id, title, name, created, updated, messages."""
        sql = ("SELECT c.id, c.title, c.name, c.created, c.updated, "
               "(SELECT COUNT(*) FROM messages m WHERE m.conversation = c.id) AS n FROM conversations c")
        if not include_empty:
            sql += " WHERE EXISTS (SELECT 1 FROM messages m WHERE m.conversation = c.id)"
        rows = self._select_limited(sql + " ORDER BY c.updated DESC, c.rowid DESC", limit)
        return [{"id": r[0], "title": r[1], "name": r[2], "created": r[3], "updated": r[4], "messages": r[5]}
                for r in rows]

    def _select_limited(self, sql: str, limit: int | None) -> list[tuple[Any, ...]]:
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (int(limit),)
        with self._lock:
            return list(self._db.execute(sql, params))

    def conversation(self, ident: str) -> dict[str, Any]:
        cid = self.resolve(ident)
        return next(c for c in self.conversations(None, include_empty=True) if c["id"] == cid)

    def _rows(self, cid: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(
                "SELECT seq, role, content, call, trusted, created, partial FROM messages WHERE conversation = ? "
                "ORDER BY seq", (cid,)))

    def messages(self, ident: str) -> list[Message]:
        """The conversation's user, assistant and tool messages in order (boot messages are not
        journaled: the kernel puts them in at spawn), ready for ``Kernel.spawn(history=...)``.
        An answer cut off while it streamed (a crash) is there with the text it had reached."""
        return [Message(role, content, call, bool(trusted))
                for _, role, content, call, trusted, _, _ in self._rows(self.resolve(ident))]

    def partial_answers(self, ident: str) -> list[int]:
        """Seqs of the conversation's answers that were cut off while they streamed."""
        return [seq for seq, *_, partial in self._rows(self.resolve(ident)) if partial]

    # --- reading: processes, RAM snapshots and paging (llmos memory ram) -----------------------

    def processes(self, limit: int | None = 20) -> list[dict[str, Any]]:
        """Kernel processes seen by this journal, the latest first (``has_ram``: a snapshot exists)."""
        sql = ("SELECT p.id, p.pid, p.name, p.conversation, p.started, p.updated, p.ram IS NOT NULL, "
               "COALESCE(c.title, '') FROM processes p LEFT JOIN conversations c ON c.id = p.conversation "
               "ORDER BY p.updated DESC, p.id DESC")
        rows = self._select_limited(sql, limit)
        return [{"process": r[0], "pid": r[1], "name": r[2], "conversation": r[3], "started": r[4],
                 "updated": r[5], "has_ram": bool(r[6]), "title": r[7]} for r in rows]

    def ram(self, ident: str | None = None) -> dict[str, Any]:
        """The latest RAM snapshot of a process and every paging record of it.

        ``ident``: None for the latest process that has a snapshot; a number for that row of
        ``processes`` (as :meth:`processes` and ``llmos memory ram`` show it); otherwise a
        conversation id (or prefix), meaning its latest process. Raises JournalError if none.
        """
        with self._lock:
            if ident is None:
                row = self._db.execute("SELECT id FROM processes WHERE ram IS NOT NULL "
                                       "ORDER BY updated DESC, id DESC LIMIT 1").fetchone()
                if row is None:
                    raise JournalError("no process has recorded its RAM yet: chat first (llmos chat)")
            elif ident.strip().isdigit():  # a process number, or a conversation id that starts with digits
                row = self._db.execute("SELECT id FROM processes WHERE id = ?", (int(ident),)).fetchone()
            else:
                row = None
        if row is None:
            try:
                cid = self.resolve(ident or "")
            except JournalError:
                if not (ident or "").strip().isdigit():
                    raise
                raise JournalError(f"no process {ident.strip()} in the journal {self.path} "
                                   "(llmos memory ram --list shows them)") from None
            with self._lock:
                row = self._db.execute("SELECT id FROM processes WHERE conversation = ? "
                                       "ORDER BY updated DESC, id DESC LIMIT 1", (cid,)).fetchone()
            if row is None:
                raise JournalError(f"conversation {cid[:8]} has no process with a recorded RAM")
        with self._lock:
            pid, name, conversation, started, updated, ram = self._db.execute(
                "SELECT pid, name, conversation, started, updated, ram FROM processes WHERE id = ?",
                (row[0],)).fetchone()
            paging = [
                {"direction": d, "reason": why, "messages": n, "tokens_before": tb, "tokens_after": ta,
                 "summaries": json.loads(summaries), "created": at}
                for d, why, n, tb, ta, summaries, at in self._db.execute(
                    "SELECT direction, reason, messages, tokens_before, tokens_after, summaries, created "
                    "FROM paging WHERE process = ? ORDER BY id", (row[0],))
            ]
            title = ""
            if conversation:
                found = self._db.execute("SELECT title FROM conversations WHERE id = ?", (conversation,)).fetchone()
                title = found[0] if found else ""
        report = json.loads(ram) if ram else None
        return {"process": row[0], "pid": pid, "name": name, "conversation": conversation, "title": title,
                "started": started, "updated": updated, "ram": report, "paging": paging}

    # --- reading: what the memory store was given (llmos memory reindex) -----------------------

    def ingested(self) -> list[dict[str, Any]]:
        """The files ingested into the memory store, oldest first."""
        with self._lock:
            rows = list(self._db.execute("SELECT source, format, chunks, bytes, created FROM ingested "
                                         "ORDER BY created, source"))
        return [{"source": r[0], "format": r[1], "chunks": r[2], "bytes": r[3], "created": r[4]} for r in rows]

    def paged_out(self) -> list[dict[str, Any]]:
        """Every summary written to disk when turns left a context window, oldest first."""
        with self._lock:
            rows = list(self._db.execute("SELECT conversation, summaries, created FROM paging "
                                         "WHERE direction = 'out' ORDER BY id"))
        return [{"conversation": c, "summary": text, "created": at}
                for c, summaries, at in rows for text in json.loads(summaries)]

    def forgotten(self) -> dict[str, str]:
        """id -> text of the entries deleted with ``llmos memory forget``."""
        with self._lock:
            return dict(self._db.execute("SELECT id, text FROM forgotten"))

    def memory_calls(self) -> list[dict[str, Any]]:
        """The memory device's successful remember and forget calls, in the order they ran."""
        with self._lock:
            rows = list(self._db.execute(
                "SELECT call, arguments, result, conversation, created FROM syscalls "
                "WHERE device = 'memory' AND ok = 1 AND call IN ('remember', 'forget') ORDER BY id"))
        return [{"call": c, "arguments": json.loads(a), "result": json.loads(r) if r else None,
                 "conversation": conv, "created": at} for c, a, r, conv, at in rows]

    def syscalls(self, ident: str) -> list[dict[str, Any]]:
        cid = self.resolve(ident)
        with self._lock:
            rows = list(self._db.execute(
                "SELECT device, call, arguments, result, ok, error, trusted, seconds, created FROM syscalls "
                "WHERE conversation = ? ORDER BY id", (cid,)))
        return [{"device": d, "call": c, "arguments": json.loads(a), "result": json.loads(r) if r else None,
                 "ok": bool(ok), "error": e, "trusted": bool(t), "seconds": s, "created": at}
                for d, c, a, r, ok, e, t, s, at in rows]

    def export(self, ident: str, fmt: str = "md") -> str:
        """The conversation as Markdown (``md``) or JSON (``json``)."""
        if fmt not in ("md", "json"):
            raise JournalError(f"unknown export format {fmt!r} (md or json)")
        info = self.conversation(ident)
        rows = self._rows(info["id"])
        if fmt == "json":
            return json.dumps({
                **info,
                "messages": [{"seq": s, "role": r, "content": c, "call": call, "trusted": bool(t), "created": at,
                              "partial": bool(partial)}
                             for s, r, c, call, t, at, partial in rows],
                "syscalls": self.syscalls(info["id"]),
            }, ensure_ascii=False, indent=2)
        out = [f"# {info['title'] or '(untitled)'}", "",
               f"Conversation `{info['id']}`, started {info['created']}, last message {info['updated']}.", ""]
        for _, role, content, call, trusted, at, partial in rows:
            if partial:
                out += ["**Assistant** (cut off while answering):", "", content, ""]
            elif role == "assistant" and call:
                out += [f"**Assistant** calls `{call}`:", "", "```json", content, "```", ""]
            elif role == "tool":
                trust = "trusted" if trusted else "untrusted"
                out += [f"**Tool** `{call or ''}` ({trust}):", "", "```", content, "```", ""]
            else:
                out += [f"**{role.capitalize()}:**", "", content, ""]
        return "\n".join(out).rstrip() + "\n"

    # --- the conversation tree: branches, rename, delete, search (desktop shell) -------------

    def branch(self, ident: str, keep: int) -> str:
        """A new conversation that starts with the first ``keep`` messages of ``ident`` (and their
        system calls), recorded as its branch; returns the new id. Spawn it with
        ``Kernel.spawn(history=journal.messages(new), conversation=new)``."""
        import uuid

        parent = self.resolve(ident)
        new = uuid.uuid4().hex

        def work(now: str) -> None:
            row = self._db.execute("SELECT title, name FROM conversations WHERE id = ?", (parent,)).fetchone()
            self._db.execute(
                "INSERT INTO conversations (id, title, name, created, updated, parent, forked_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (new, row[0], row[1], now, now, parent, int(keep)))
            self._db.execute(
                "INSERT INTO messages (conversation, seq, role, content, call, trusted, created) "
                "SELECT ?, seq, role, content, call, trusted, created FROM messages "
                "WHERE conversation = ? AND seq <= ? ORDER BY seq", (new, parent, int(keep)))
            calls = self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation = ? AND seq <= ? AND role = 'assistant' "
                "AND call IS NOT NULL", (parent, int(keep))).fetchone()[0]
            self._db.execute(
                "INSERT INTO syscalls (conversation, pid, call_id, device, call, arguments, result, ok, error, "
                "trusted, seconds, created) SELECT ?, pid, call_id, device, call, arguments, result, ok, error, "
                "trusted, seconds, created FROM syscalls WHERE conversation = ? ORDER BY id LIMIT ?",
                (new, parent, int(calls)))

        self._transaction(work)
        return new

    def parent(self, ident: str) -> str | None:
        """The conversation ``ident`` branched from, or None for a root."""
        cid = self.resolve(ident)
        with self._lock:
            row = self._db.execute("SELECT parent FROM conversations WHERE id = ?", (cid,)).fetchone()
        return row[0] if row else None

    def root(self, ident: str) -> str:
        """The first conversation of ``ident``'s tree."""
        cid = self.resolve(ident)
        seen = {cid}
        while (up := self.parent(cid)) is not None and up not in seen:
            seen.add(up)
            cid = up
        return cid

    def family(self, ident: str) -> list[str]:
        """Every conversation of ``ident``'s tree (the root first, then branches by creation)."""
        root = self.root(ident)
        out, todo = [root], [root]
        while todo:
            current = todo.pop(0)
            with self._lock:
                children = [r[0] for r in self._db.execute(
                    "SELECT id FROM conversations WHERE parent = ? ORDER BY created, rowid", (current,))]
            out += children
            todo += children
        return out

    def latest_leaf(self, ident: str) -> str:
        """The most recently updated conversation of ``ident``'s tree (what reopening shows)."""
        family = self.family(ident)
        with self._lock:
            marks = ",".join("?" * len(family))
            row = self._db.execute(f"SELECT id FROM conversations WHERE id IN ({marks}) "
                                   "ORDER BY updated DESC, rowid DESC LIMIT 1", family).fetchone()
        return row[0]

    def rename(self, ident: str, title: str) -> None:
        """Give ``ident``'s whole tree a new title (one line)."""
        title = " ".join(title.split())
        if not title:
            raise JournalError("a conversation title cannot be empty")
        family = self.family(ident)
        marks = ",".join("?" * len(family))
        self._transaction(lambda now: self._db.execute(
            f"UPDATE conversations SET title = ? WHERE id IN ({marks})", (title, *family)))

    def delete(self, ident: str) -> int:
        """Delete ``ident``'s whole tree (conversations, messages, system calls); returns how many
        conversations went."""
        family = self.family(ident)
        marks = ",".join("?" * len(family))

        def work(now: str) -> None:
            self._db.execute(f"DELETE FROM syscalls WHERE conversation IN ({marks})", family)
            self._db.execute(f"DELETE FROM messages WHERE conversation IN ({marks})", family)
            self._db.execute(f"DELETE FROM conversations WHERE id IN ({marks})", family)

        self._transaction(work)
        return len(family)

    def trees(self, query: str = "", limit: int | None = 200) -> list[dict[str, Any]]:
        """One entry per conversation tree, latest activity first: the root's id and title, the
        tree's last update and its number of branches; ``query`` keeps the trees whose title or
        any message contains it (case-insensitive). One query, whatever the number of trees."""
        needle = query.strip().lower()
        sql = """
            WITH RECURSIVE tree(id, root) AS (
                SELECT id, id FROM conversations WHERE parent IS NULL
                UNION ALL
                SELECT c.id, t.root FROM conversations c JOIN tree t ON c.parent = t.id
            )
            SELECT r.id, r.title, r.created, MAX(c.updated), COUNT(*)
            FROM tree t JOIN conversations c ON c.id = t.id JOIN conversations r ON r.id = t.root
            WHERE EXISTS (SELECT 1 FROM messages m WHERE m.conversation = r.id)
            GROUP BY t.root
            HAVING ? = '' OR instr(lower(r.title), ?) > 0 OR EXISTS (
                SELECT 1 FROM messages m JOIN tree t2 ON m.conversation = t2.id
                WHERE t2.root = r.id AND instr(lower(m.content), ?) > 0)
            ORDER BY MAX(c.updated) DESC, r.rowid DESC
        """
        params: tuple[Any, ...] = (needle, needle, needle)
        if limit is not None:
            sql += " LIMIT ?"
            params += (int(limit),)
        with self._lock:
            rows = list(self._db.execute(sql, params))
        return [{"id": r[0], "title": r[1], "created": r[2], "updated": r[3], "branches": r[4]} for r in rows]
