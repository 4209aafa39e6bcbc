"""Each built-in device called directly through `llmos devices call`, as a user would, in a
subprocess with its own config and data directory (no model needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .pages import serve

PAGE = ("<html><head><title>The Lighthouse Keeper</title></head><body><article><h1>The Lighthouse Keeper</h1>"
        "<p>Every night for forty years the keeper climbed the hundred and twelve steps.</p></article></body></html>")


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    results = "<html><head><title>Results</title></head><body><a href='/keeper.html'>The keeper</a></body></html>"
    with serve(lambda path: results if path.startswith("/search") else PAGE) as local:
        yield local.url


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, site: str) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "config.toml"
    config.write_text(f'[devices.browser]\nsearch_url = "{site}/search?q={{query}}"\n', encoding="utf-8")
    return {**os.environ, "LLMOS_CONFIG": str(config), "LLMOS_DATA_DIR": str(root / "data")}


def call(env: dict[str, str], name: str, arguments: dict[str, Any], *flags: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "llmos.app.cli", *flags, "devices", "--json", "call", name,
                           "--args", json.dumps(arguments)],
                          capture_output=True, text=True, env=env, timeout=180, stdin=subprocess.DEVNULL)
    return done.returncode, json.loads(done.stdout)


def test_calculator(env):
    code, result = call(env, "calculator.evaluate", {"expression": "17.5% of 2480"})
    assert code == 0 and result["ok"] and result["result"] == "434"


def test_browser_open_and_search_with_the_configured_endpoint(env, site):
    code, page = call(env, "browser.open", {"url": f"{site}/keeper.html"}, "--yes")
    assert code == 0 and page["trusted"] is False
    assert page["result"]["title"] == "The Lighthouse Keeper" and "hundred and twelve steps" in page["result"]["text"]
    code, found = call(env, "browser.search", {"query": "lighthouse keeper"}, "--yes")
    assert code == 0 and found["result"]["links"] == [{"url": f"{site}/keeper.html", "text": "The keeper"}]


def test_browser_refuses_the_metadata_address(env):
    code, result = call(env, "browser.open", {"url": "http://169.254.169.254/latest/meta-data/"}, "--yes")
    assert code == 1 and not result["ok"] and "link-local" in result["error"]


def test_without_a_grant_and_no_terminal_the_answer_is_no_with_a_hint(env, site):
    code, result = call(env, "browser.open", {"url": f"{site}/keeper.html"})
    assert code == 1 and "llmos devices grant browser network" in result["error"]


def test_image_thumbnail_saves_a_file(env, tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), "orange").save(photo)
    code, result = call(env, "image.thumbnail", {"path": str(photo), "max_size": 200}, "--yes")
    assert code == 0 and result["ok"]
    saved = Path(result["result"]["saved_file"])
    assert saved.is_file() and Image.open(saved).size == (200, 150)
    assert saved.is_relative_to(Path(env["LLMOS_DATA_DIR"]))


def test_image_describe_without_vision_says_so(env, tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), "orange").save(photo)
    code, result = call(env, "image.describe", {"path": str(photo)}, "--yes")
    assert code == 1 and result["error"].startswith("vision is not configured")


def test_python_run(env):
    code, result = call(env, "python.run", {"code": "import sys\nprint(sum(range(101)))\nsys.exit(3)"}, "--yes")
    assert code == 0 and result["result"]["stdout"].strip() == "5050" and result["result"]["exit_status"] == 3


def test_memory_remember_then_recall_in_another_run(env):
    code, stored = call(env, "memory.remember", {"text": "The spare key is under the blue flowerpot."})
    assert code == 0 and stored["ok"]
    code, recalled = call(env, "memory.recall", {"query": "where is the spare key?"})
    assert code == 0 and "blue flowerpot" in json.dumps(recalled["result"])
