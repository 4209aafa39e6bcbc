"""The files of a folder worth ingesting: walked recursively, honouring ``.gitignore``.

Every ``.gitignore`` (and ``.llmosignore``, the same syntax, for what git keeps but the OS
should not read) applies to its own folder and below, as git reads them (through ``pathspec``,
git's wildmatch rules). Hidden files and folders (``.git``, ``.venv``, ``.cache``) are left out,
and so are symbolic links that lead out of the folder or in a loop. The order is stable: sorted,
folder by folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pathspec

__all__ = ["IGNORE_FILES", "walk"]

IGNORE_FILES = (".gitignore", ".llmosignore")


def _spec(folder: Path) -> pathspec.PathSpec | None:
    lines: list[str] = []
    for name in IGNORE_FILES:
        try:
            lines += (folder / name).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def _ignored(path: Path, is_dir: bool, specs: list[tuple[Path, pathspec.PathSpec]]) -> bool:
    for base, spec in specs:
        relative = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        if spec.match_file(relative):
            return True
    return False


def walk(root: str | os.PathLike[str]) -> Iterator[Path]:
    """The files under ``root`` that are not hidden and not ignored, in sorted order."""
    root = Path(root).resolve()
    yield from _walk(root, root, [])


def _walk(root: Path, folder: Path, specs: list[tuple[Path, pathspec.PathSpec]]) -> Iterator[Path]:
    here = _spec(folder)
    specs = [*specs, (folder, here)] if here is not None else specs
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root) or (entry.is_dir() and path.is_relative_to(target)):
                continue
        if entry.is_dir():
            if not _ignored(path, True, specs):
                yield from _walk(root, path, specs)
        elif entry.is_file() and not _ignored(path, False, specs):
            yield path
