"""Pinned MCP tool lists: the rug-pull defence.

The first time a server's tools are seen, each is recorded with a hash of what the model would be
shown (name, description, input schema) in ``<data_dir>/mcp_pins.json``::

    {"weather": {"pinned": {"forecast": "<sha256>"}, "pending": {"alerts": "<sha256>"}}}

Later, an unchanged tool is offered as before; a new tool, or one whose description or schema
changed, is held back (kept under ``pending``) until the user approves the server again with
``llmos devices approve SERVER``, which pins what was last seen. A tool the server dropped is
simply gone. The server's own instructions (the device's description) are pinned the same way,
under the name ``(instructions)``; changed, they are not shown until approved.

Written atomically; a damaged file is logged and treated as unreadable: every server is then
held back entirely (nothing pinned can be trusted), never a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.kernel.devices import write_json_atomic

log = logging.getLogger(__name__)

FILE_NAME = "mcp_pins.json"
INSTRUCTIONS = "(instructions)"


def pins_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / FILE_NAME


def tool_hash(name: str, description: str, schema: Any) -> str:
    text = json.dumps({"name": name, "description": description, "schema": schema},
                      sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class PinCheck:
    """What a server may offer now."""

    server: str
    offered: set[str] = field(default_factory=set)  # tool names whose hash is pinned
    new: list[str] = field(default_factory=list)  # held back: never approved
    changed: list[str] = field(default_factory=list)  # held back: differs from what was approved
    first_seen: bool = False

    @property
    def held(self) -> list[str]:
        return [*self.changed, *self.new]

    def message(self) -> str:
        parts = []
        if self.changed:
            parts.append(f"changed since approved: {', '.join(self.changed)}")
        if self.new:
            parts.append(f"new: {', '.join(self.new)}")
        return (f"MCP server {self.server!r}: tools held back until approved ({'; '.join(parts)}): "
                f"check them, then run `llmos devices approve {self.server}`")


class DamagedPins(Exception):
    pass


class PinStore:
    """Thread-safe reads and atomic writes of the pins file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise DamagedPins(f"cannot read {self.path}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DamagedPins(f"{self.path} is damaged: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise DamagedPins(f"{self.path} is damaged: not an object of servers")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.path, data, sort_keys=True)

    def check(self, server: str, tools: Iterable[tuple[str, str]]) -> PinCheck:
        """``tools`` = (name, hash) as seen now. Pins them all the first time; later records the
        differences as pending and returns what may be offered."""
        seen = dict(tools)
        result = PinCheck(server)
        with self._lock:
            try:
                data = self._load()
            except DamagedPins as exc:
                log.warning("%s: holding back every tool of %r", exc, server)
                result.new = sorted(seen)
                return result
            entry = data.get(server)
            if entry is None:
                data[server] = {"pinned": seen, "pending": {}}
                result.first_seen, result.offered = True, set(seen)
            else:
                pinned = dict(entry.get("pinned") or {})
                pending = {name: h for name, h in seen.items() if pinned.get(name) != h}
                result.offered = {name for name, h in seen.items() if pinned.get(name) == h}
                result.changed = sorted(n for n in pending if n in pinned)
                result.new = sorted(n for n in pending if n not in pinned)
                if entry.get("pending") == pending:
                    return result
                data[server] = {"pinned": pinned, "pending": pending}
            try:
                self._save(data)
            except OSError as exc:  # nothing remembered: the next start asks again
                log.warning("cannot write the MCP pins %s: %s", self.path, exc)
        return result

    def approve(self, server: str) -> list[str]:
        """Pin what was last seen of ``server``; returns the tools that were approved."""
        with self._lock:
            data = self._load()
            entry = data.get(server)
            if entry is None:
                raise KeyError(server)
            pending = dict(entry.get("pending") or {})
            data[server] = {"pinned": {**(entry.get("pinned") or {}), **pending}, "pending": {}}
            self._save(data)
            return sorted(pending)

    def servers(self) -> dict[str, Any]:
        with self._lock:
            return self._load()
