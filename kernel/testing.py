"""Test helpers for device authors: call a device the way the kernel does, in a pytest test.

    from llmos.kernel.testing import call_device

    def test_forecast(tmp_path):
        result = call_device(device, "forecast", {"city": "Oslo"}, grants=["network"], data_dir=tmp_path)
        assert result.ok and "Oslo" in result.value

The call goes through the real dispatcher: the arguments are validated against the schema the
model sees, the permissions are checked against ``grants``, the call runs on a worker thread with
its timeout, and the result is normalised and size-limited. ``tainted=True`` calls it as from a
process that has read untrusted content (a side-effect call, or a network call to a place not
in ``contacted``, or one whose arguments carry words the untrusted content in ``provenance``
did not contain, then needs ``consent``). ``ask`` answers permission prompts, as the user would.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .devices import Device
from .flow import Provenance
from .registry import DeviceRegistry
from .syscalls.dispatch import AskPermission, Consent, Dispatcher, GrantPolicy, SyscallResult

__all__ = ["call_device", "SyscallResult"]


def call_device(
    device: Device | Callable[[], Device],
    call: str,
    arguments: dict[str, Any] | None = None,
    *,
    grants: Iterable[str] = (),
    data_dir: Path | None = None,
    settings: dict[str, Any] | None = None,
    tainted: bool = False,
    consent: Consent | None = None,
    ask: AskPermission | None = None,
    contacted: set[str] | None = None,
    provenance: Provenance | None = None,
) -> SyscallResult:
    """Start ``device`` (its setup hook, with its own folder under ``data_dir``), make one call,
    and stop it (its teardown hook). ``device`` may be a factory (``make_device``): it is called."""
    made = device if isinstance(device, Device) else device()
    registry = DeviceRegistry()
    registry.register(made)
    registry.start(data_dir or Path(tempfile.mkdtemp(prefix="llmos-device-test-")), {made.name: dict(settings or {})})
    if registry.broken:
        return SyscallResult(made.name, call, dict(arguments or {}), ok=False, error=registry.broken[0].error)
    dispatcher = Dispatcher(registry, GrantPolicy(grants, ask=ask), consent)
    try:
        return dispatcher.call_blocking(f"{made.name}.{call}", dict(arguments or {}), tainted=tainted,
                                        contacted=contacted, provenance=provenance)
    finally:
        dispatcher.close()
        registry.stop()  # the device's teardown runs, as when the kernel shuts down
