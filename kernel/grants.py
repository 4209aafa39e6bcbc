"""Remembered permission grants: ``<data_dir>/grants.json`` = ``{device: [permission, ...]}``.

Written atomically (a temporary file, then ``os.replace``); a damaged or unreadable file is
logged and treated as empty (nothing granted), never a crash. Thread-safe.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from .devices import Permission, write_json_atomic

log = logging.getLogger(__name__)

FILE_NAME = "grants.json"


def grants_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / FILE_NAME


class GrantStore:
    """The permissions the user granted to each device, kept across runs."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()

    # --- reading -----------------------------------------------------------------------------

    def _load(self) -> dict[str, set[Permission]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the grants file %s (%s); treating it as empty", self.path, exc)
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        except ValueError as exc:
            log.warning("the grants file %s is damaged (%s); treating it as empty: nothing is granted",
                        self.path, exc)
            return {}
        grants: dict[str, set[Permission]] = {}
        for device, perms in data.items():
            if not isinstance(perms, list):
                log.warning("grants file %s: ignoring device %r (not a list)", self.path, device)
                continue
            valid: set[Permission] = set()
            for p in perms:
                try:
                    valid.add(Permission(p))
                except ValueError:
                    log.warning("grants file %s: ignoring unknown permission %r for %r", self.path, p, device)
            if valid:
                grants[str(device)] = valid
        return grants

    def granted(self, device: str) -> set[Permission]:
        with self._lock:
            return set(self._load().get(device, set()))

    def all(self) -> dict[str, list[str]]:
        with self._lock:
            return {d: sorted(p.value for p in perms) for d, perms in sorted(self._load().items())}

    # --- writing -----------------------------------------------------------------------------

    def _save(self, grants: dict[str, set[Permission]]) -> None:
        data = {d: sorted(p.value for p in perms) for d, perms in sorted(grants.items()) if perms}
        write_json_atomic(self.path, data)

    def grant(self, device: str, perms: Iterable[str | Permission]) -> set[Permission]:
        """Remember ``perms`` for ``device``; returns what the device now holds."""
        new = {Permission(p) for p in perms}
        with self._lock:
            grants = self._load()
            grants[device] = grants.get(device, set()) | new
            self._save(grants)
            return set(grants[device])

    def revoke(self, device: str, perms: Iterable[str | Permission] | None = None) -> set[Permission]:
        """Forget ``perms`` (None = all) for ``device``; returns what the device still holds."""
        with self._lock:
            grants = self._load()
            if perms is None:
                grants.pop(device, None)
            else:
                gone = {Permission(p) for p in perms}
                grants[device] = grants.get(device, set()) - gone
            self._save(grants)
            return set(grants.get(device, set()))
