"""The layout rules: only app/ imports Qt; every package folder is installed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["app", "kernel", "memory", "peripherals", "plugins", "assets"]


def test_only_app_imports_qt():
    offenders = [
        str(path.relative_to(ROOT))
        for layer in LAYERS
        if layer != "app"
        for path in (ROOT / layer).rglob("*.py")
        if re.search(r"^\s*(from|import)\s+PySide6", path.read_text(encoding="utf-8"), re.M)
    ]
    assert offenders == []


def test_the_kernel_never_imports_the_app():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "kernel").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+llmos\.app", path.read_text(encoding="utf-8"), re.M)
    ]
    assert offenders == []


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        "llmos." + ".".join(init.parent.relative_to(ROOT).parts)
        for layer in LAYERS
        for init in (ROOT / layer).rglob("__init__.py")
        if "examples" not in init.parts
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages"
