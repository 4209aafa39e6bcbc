"""Booting llmos: config -> devices -> backend -> kernel. Shared by the CLI and the desktop shell."""

from __future__ import annotations

from pathlib import Path

from llmos.kernel.backends import make_backend
from llmos.kernel.config import Config
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import Consent, GrantPolicy
from llmos.kernel.turn import TurnOptions
from llmos.memory.journal import Journal


def turn_options(config: Config) -> TurnOptions:
    return TurnOptions(
        slice_tokens=config.slice_tokens,
        max_rounds=config.max_rounds,
        decision_threshold=config.decision_threshold,
        temperature=config.temperature,
        max_answer_tokens=config.max_answer_tokens,
    )


def grant_policy(config: Config, grant_all: bool = False) -> GrantPolicy:
    return GrantPolicy(config.grants, grant_all=grant_all)


def build_kernel(config: Config, *, grant_all: bool = False, registry: DeviceRegistry | None = None,
                 consent: Consent | None = None) -> Kernel:
    """A kernel for ``config``, not started (call ``start()``; the model loads on the kernel thread)."""
    if registry is None:
        registry = DeviceRegistry.from_entry_points()
        registry.start(config.resolved_data_dir())
    kernel = Kernel(make_backend(config), registry, turn_options(config), grant_policy(config, grant_all), consent,
                    calibration_store=config.resolved_data_dir() / "calibration.json")
    attach_journal(kernel, journal_path(config))
    return kernel


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
