"""Booting llmos: config -> devices -> backend -> kernel. Shared by the CLI and the desktop shell."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from llmos.kernel.backends import make_backend
from llmos.kernel.config import Config
from llmos.kernel.loop import Kernel
from llmos.kernel.prose import Prose
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import AskPermission, Consent, GrantPolicy
from llmos.kernel.turn import TurnOptions
from llmos.memory.journal import Journal
from llmos.memory.pager import DiskPager


def turn_options(config: Config) -> TurnOptions:
    return TurnOptions(
        slice_tokens=config.slice_tokens,
        max_rounds=config.max_rounds,
        decision_threshold=config.decision_threshold,
        prose=replace(Prose(), temperature=config.temperature, repeat_penalty=config.repeat_penalty,
                      dry_multiplier=config.dry_multiplier),
        max_answer_tokens=config.max_answer_tokens,
    )


def grant_policy(config: Config, grant_all: bool = False, ask: AskPermission | None = None) -> GrantPolicy:
    """Config grants (every device) + the remembered grants in ``<data_dir>/grants.json``."""
    from llmos.kernel.grants import GrantStore, grants_path

    return GrantPolicy(config.grants, grant_all=grant_all,
                       store=GrantStore(grants_path(config.resolved_data_dir())), ask=ask)


def build_kernel(config: Config, *, grant_all: bool = False, registry: DeviceRegistry | None = None,
                 consent: Consent | None = None, ask: AskPermission | None = None) -> Kernel:
    """A kernel for ``config``, not started (call ``start()``: its devices start, MCP servers
    included, and the model loads on the kernel thread). Until then it holds no device resources,
    so the desktop can build the next kernel before it shuts the old one down."""
    if registry is None:
        registry = build_registry(config, start=False)
    kernel = Kernel(make_backend(config), registry, turn_options(config), grant_policy(config, grant_all, ask), consent,
                    calibration_store=config.resolved_data_dir() / "calibration.json",
                    pager=DiskPager(config.resolved_data_dir() / "devices" / "memory" / "chroma",
                                    url=config.chroma_url or None, document_embedder=config.document_embedder))
    attach_journal(kernel, journal_path(config))
    return kernel


def build_registry(config: Config, *, start: bool = True) -> DeviceRegistry:
    """Every device: the entry-point plugins (built-ins too, and the ``mcp`` factory that makes
    a device of each configured MCP server), started (``start=False``: prepared, for
    ``Kernel.start``). Stop it with ``registry.stop()`` (``Kernel.shutdown`` does)."""
    registry = DeviceRegistry.from_entry_points()
    settings = {name: dict(values) for name, values in (config.devices or {}).items()}  # [devices.<name>]
    if config.chroma_url:
        settings.setdefault("memory", {})["chroma_url"] = config.chroma_url
    settings.setdefault("memory", {}).setdefault("document_embedder", config.document_embedder)
    settings["mcp"] = mcp_settings(config)
    registry.prepare(config.resolved_data_dir(), settings)
    if start:
        registry.start()
    return registry


def mcp_settings(config: Config) -> dict[str, Any]:
    """The ``mcp`` factory's settings: the configured servers, and where their tool lists are
    pinned (a changed or new tool waits for `llmos devices approve SERVER`)."""
    from llmos.plugins.mcp.pins import pins_path

    return {"servers": dict((config.mcp or {}).get("servers", {})),
            "pins_file": str(pins_path(config.resolved_data_dir()))}


def journal_path(config: Config) -> Path:
    return config.resolved_data_dir() / "journal.sqlite3"


def attach_journal(kernel: Kernel, path: Path) -> Journal:
    """Open the journal at ``path`` and subscribe it to ``kernel.bus`` before any other observer
    (call it right after building the kernel), so a message is committed before it is shown.
    Raises JournalError (one line) when the file is not a usable journal."""
    journal = Journal(path)
    kernel.bus.subscribe(journal.observe)
    kernel.journal = journal  # type: ignore[attr-defined]
    return journal
