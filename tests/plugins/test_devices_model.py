"""Each built-in device through the kernel on the real embedded model, for one natural request.

The calculator's round trip is in tests/kernel/test_kernel_model.py. Where the model picks a
neighbouring call that does the job (image.resize for "a 200x200 thumbnail"), the test accepts it
and says which it was: choosing among calls is the decision step's work, not the device's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from .pages import serve

pytestmark = [pytest.mark.model, pytest.mark.timeout(1800)]  # a real turn on a shared 2-core machine

TURN_S = 600

PAGE = ("<html><head><title>The Lighthouse Keeper</title></head><body><article><h1>The Lighthouse Keeper</h1>"
        "<p>Every night for forty years the keeper climbed the hundred and twelve steps.</p></article></body></html>")


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with serve(lambda path: PAGE) as local:
        yield local.url


def calls_of(result, device: str) -> list[dict]:
    return [s for s in result.syscalls if s["device"] == device]


def test_browser_title_of_a_local_page(device_kernel, site):
    result = device_kernel.kernel.ask(f"Open {site}/keeper.html and tell me the title.").result(TURN_S)
    [opened] = calls_of(result, "browser")
    assert opened["call"] == "open" and opened["arguments"]["url"] == f"{site}/keeper.html"
    assert opened["ok"] and opened["trusted"] is False
    assert "Lighthouse Keeper" in result.answer


def test_image_thumbnail(device_kernel, tmp_path: Path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), "orange").save(photo)
    result = device_kernel.kernel.ask(f"Make a 200x200 thumbnail of {photo}").result(TURN_S)
    made = [s for s in calls_of(result, "image") if s["call"] in ("thumbnail", "resize") and s["ok"]]
    assert made, f"no thumbnail was made: {result.syscalls}"
    saved = Path(made[0]["result"]["saved_file"])
    assert saved.is_file() and saved.is_relative_to(device_kernel.data_dir)
    assert max(Image.open(saved).size) == 200
    assert Image.open(photo).size == (640, 480)  # the original is untouched


def test_python_run(device_kernel):
    result = device_kernel.kernel.ask("Use Python to print the first 10 square numbers.").result(TURN_S)
    [ran] = calls_of(result, "python")
    assert ran["call"] == "run" and ran["ok"]
    assert ran["result"]["exit_status"] == 0 and "81" in ran["result"]["stdout"].split()


def test_memory_remember_then_recall(device_kernel):
    result = device_kernel.kernel.ask("Remember that my locker number is 4417.").result(TURN_S)
    [stored] = calls_of(result, "memory")
    assert stored["call"] == "remember" and stored["ok"] and "4417" in stored["arguments"]["text"]
    recalled = device_kernel.kernel.dispatcher.call_blocking("memory.recall", {"query": "locker number"})
    assert recalled.ok and "4417" in str(recalled.value)
