"""The example external plugin installs like any package and appears through the entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plugins" / "examples" / "llmos-dice"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pip-install the example into a private folder (the project's .venv stays as it is)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return {**os.environ, "PYTHONPATH": str(target)}


def test_the_installed_plugin_is_listed_and_callable(installed: dict[str, str]):
    listed = subprocess.run([sys.executable, "-m", "llmos.app.cli", "devices", "--json"],
                            capture_output=True, text=True, env=installed, timeout=120)
    devices = {d["name"]: d for d in json.loads(listed.stdout)["devices"]}
    assert devices["dice"]["calls"][0]["name"] == "dice.roll"
    assert devices["dice"]["calls"][0]["parameters"]["properties"]["sides"]["default"] == 6
    called = subprocess.run([sys.executable, "-m", "llmos.app.cli", "devices", "--json", "call", "dice.roll",
                             "--args", '{"count": 4, "sides": 2}'],
                            capture_output=True, text=True, env=installed, timeout=120)
    result = json.loads(called.stdout)
    assert result["ok"] and len(result["result"]["rolls"]) == 4 and 4 <= result["result"]["total"] <= 8


def test_the_plugins_own_tests_pass_with_the_author_helper(installed: dict[str, str]):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", str(EXAMPLE / "tests")],
                          capture_output=True, text=True, env=installed, timeout=300, cwd=EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
