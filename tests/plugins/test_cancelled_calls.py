"""The built-in devices that act on the world commit nothing for a call that was cancelled (it
timed out, or the user stopped it): each is called as the dispatcher calls it, with its instance's
context, after the cancel, and its side effect is looked for and not found."""

from __future__ import annotations

from contextvars import Context
from pathlib import Path
from typing import Any

import pytest

from llmos.kernel.call_context import enter_call
from llmos.kernel.devices import CallContext, Cancelled, DeviceError
from llmos.kernel.registry import DeviceRegistry

from .pages import serve


def started(tmp_path: Path, settings: dict[str, dict[str, Any]] | None = None) -> DeviceRegistry:
    registry = DeviceRegistry.from_entry_points()
    registry.start(tmp_path / "data", settings or {})
    return registry


def call(registry: DeviceRegistry, qualified: str, arguments: dict[str, Any], *, cancelled: bool,
         pid: int = 1) -> Any:
    """Run the call's function as its worker does: its instance's context, made current."""
    device, found = registry.resolve(qualified)
    instance = registry.instance(device.name)
    context = CallContext(pid, None, instance.data_dir, instance.settings, state=instance.state)
    if cancelled:
        context.cancel("its deadline passed")

    def run() -> Any:
        enter_call(context)
        args = {**arguments, found.context_parameter: context} if found.context_parameter else arguments
        return found.function(**args)

    return Context().run(run)


def test_a_cancelled_image_call_writes_no_file(tmp_path):
    registry = started(tmp_path)
    out = tmp_path / "data" / "devices" / "image" / "images"
    with pytest.raises(Cancelled):
        call(registry, "image.chart", {"values": [1, 2, 3]}, cancelled=True)
    assert list(out.iterdir()) == []
    saved = call(registry, "image.chart", {"values": [1, 2, 3]}, cancelled=False)
    assert [p.name for p in out.iterdir()] == [Path(saved["saved_file"]).name]


def test_a_cancelled_python_run_never_starts_the_snippet(tmp_path):
    registry = started(tmp_path, {"python": {"sandbox": "off"}})
    mark = tmp_path / "ran.txt"
    code = f"open({str(mark)!r}, 'w').write('ran')"
    with pytest.raises(Cancelled):
        call(registry, "python.run", {"code": code}, cancelled=True)
    assert not mark.exists()
    assert call(registry, "python.run", {"code": code}, cancelled=False)["exit_status"] == 0
    assert mark.read_text() == "ran"


def test_a_cancelled_remember_stores_nothing(tmp_path):
    registry = started(tmp_path)
    try:
        with pytest.raises(Cancelled):
            call(registry, "memory.remember", {"text": "the boat is called Wren"}, cancelled=True)
        assert "empty" in call(registry, "memory.recall", {"query": "boat name"}, cancelled=False)
        call(registry, "memory.remember", {"text": "the boat is called Wren"}, cancelled=False)
        assert "Wren" in call(registry, "memory.recall", {"query": "boat name"}, cancelled=False)
    finally:
        registry.stop()


def test_a_cancelled_open_does_not_become_the_open_page(tmp_path):
    registry = started(tmp_path)
    with serve(lambda path: "<html><body><p>Otters hold hands while they sleep.</p></body></html>") as site:
        url = f"{site.url}/otters"
        with pytest.raises(Cancelled):
            call(registry, "browser.open", {"url": url}, cancelled=True)
        with pytest.raises(DeviceError, match="no page is open"):
            call(registry, "browser.find", {"text": "otters"}, cancelled=False)
        call(registry, "browser.open", {"url": url}, cancelled=False)
        assert call(registry, "browser.find", {"text": "otters"}, cancelled=False).value["count"] == 1


def test_a_cancelled_speak_writes_no_wav(tmp_path):
    out = tmp_path / "said.wav"
    registry = started(tmp_path, {"speech": {"output": str(out)}})
    with pytest.raises(Cancelled):
        call(registry, "speech.speak", {"text": "Good morning."}, cancelled=True)
    assert not out.exists()
    call(registry, "speech.speak", {"text": "Good morning."}, cancelled=False)
    assert out.stat().st_size > 1000
