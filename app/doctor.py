"""`llmos doctor`: check what llmos needs, one line per check, and a fix for each failure.

    llmos doctor [--json] [--recheck] [--model PATH]

The checks (app/doctor_checks.py), by group: ``config`` (the file, the device plugins, each MCP
server starts and lists its tools), ``models`` (the embedded model against its sha256, the
whisper weights, the embedders and the static table; ``--model PATH``: that GGUF's metadata and a
decode), ``engine`` (the smoke decode on the remembered engine path, its tokens/s and the CPU's
features; ``--recheck`` proves the paths again), ``voice`` (espeak-ng, the audio devices),
``display`` (a display, the Qt platform) and ``data`` (the data directory is writable, the journal
passes ``PRAGMA integrity_check``, the memory store opens). The exit status is 1 when a check
fails; a warning (no sound card, no display: what a headless machine lacks) keeps it 0.
Wiring in app/cli.py: ``doctor.add_parser(sub)`` and, before the config is loaded (a broken
config is one of the things it reports), ``if args.command == "doctor": return doctor.run(...)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos.app.doctor_checks import FAIL, OK, WARN, Check, Context, checks
from llmos.kernel.config import Config, ConfigError, default_config_path, load_config

__all__ = ["add_parser", "run", "diagnose"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    doctor = sub.add_parser("doctor", help="check what llmos needs here, with a fix for each failure")
    doctor.add_argument("--json", action="store_true", help="one JSON object")
    doctor.add_argument("--recheck", action="store_true", help="prove the engine paths again (not the remembered choice)")
    doctor.add_argument("--model", dest="doctor_model", metavar="PATH",
                        help="also check this GGUF: it loads and decodes, its chat template and context length")
    return doctor


def _fallback(args: argparse.Namespace) -> Callable[[], Config]:
    """The config without the file (the flags and the environment still count), for when the file is broken."""
    def load() -> Config:
        overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Config)}
        try:
            return load_config(Path(os.devnull), overrides=overrides)
        except ConfigError:
            return Config()
    return load


def diagnose(ctx: Context) -> list[Check]:
    """Run every check; one that raises is reported as failed (a doctor that crashes helps no one)."""
    found: list[Check] = []
    for check in checks(ctx):
        started = time.monotonic()
        try:
            result = check(ctx)
        except Exception as exc:
            result = Check("doctor", check.__name__.removeprefix("check_"), FAIL,
                           f"the check itself failed: {type(exc).__name__}: {exc}",
                           "report this as an llmos bug (with `llmos -v doctor`)")
        results = result if isinstance(result, list) else [result]
        for r in results:
            r.seconds = round((time.monotonic() - started) / len(results), 3)
        found += results
    return found


def _print(found: list[Check]) -> None:
    for c in found:
        print(f"{c.status:<4} {c.name}: {c.detail}")
        if c.fix and c.status != OK:
            print(f"     fix: {c.fix}")
    counts = {s: sum(c.status == s for c in found) for s in (OK, WARN, FAIL)}
    verdict = "llmos can run here" if not counts[FAIL] else "something llmos needs is broken"
    print(f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failed: {verdict}")


def run(args: argparse.Namespace, load: Callable[[], Config]) -> int:
    """`llmos doctor`: ``load`` reads the config as every other command does."""
    config_path = Path(args.config) if getattr(args, "config", None) else default_config_path()
    other = Path(args.doctor_model).expanduser() if args.doctor_model else None
    ctx = Context(load, config_path, _fallback(args), recheck=args.recheck, other_model=other)
    found = diagnose(ctx)
    failed = any(c.status == FAIL for c in found)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [dataclasses.asdict(c) for c in found]},
                         indent=2, ensure_ascii=False))
    else:
        _print(found)
    sys.stdout.flush()
    return 1 if failed else 0
