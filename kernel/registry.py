"""The device registry: which devices the kernel has, found through one entry-point group."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

from pathlib import Path
from typing import Any

from .devices import Call, Device, DeviceContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llmos.devices"


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to load: shown by `llmos devices`, never fatal."""

    name: str
    target: str
    error: str


class UnknownCall(LookupError):
    pass


class DeviceRegistry:
    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        self.broken: list[BrokenPlugin] = []

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> "DeviceRegistry":
        """Load every device registered under ``group`` (built-ins and plugins alike)."""
        registry = cls()
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                obj = ep.load()
                device = obj() if callable(obj) and not isinstance(obj, Device) else obj
                if not isinstance(device, Device):
                    raise TypeError(f"{ep.value} is a {type(device).__name__}, not a Device")
                registry.register(device)
            except Exception as exc:  # a broken plugin must not stop the OS
                log.warning("device plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                registry.broken.append(BrokenPlugin(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
        return registry

    def start(self, data_dir: Path, settings: dict[str, dict[str, Any]] | None = None) -> None:
        """Start every device with its own folder under ``data_dir/devices``; a failure unregisters it."""
        for device in list(self._devices.values()):
            context = DeviceContext(data_dir / "devices" / device.name, dict((settings or {}).get(device.name, {})))
            try:
                device.start(context)
            except Exception as exc:
                log.warning("device %s failed to start: %s", device.name, exc)
                del self._devices[device.name]
                self.broken.append(BrokenPlugin(device.name, f"{device.name} (start)", f"{type(exc).__name__}: {exc}"))

    def register(self, device: Device) -> None:
        if device.name in self._devices:
            raise ValueError(f"a device named {device.name!r} is already registered")
        self._devices[device.name] = device

    def devices(self) -> list[Device]:
        return list(self._devices.values())

    def get(self, name: str) -> Device:
        try:
            return self._devices[name]
        except KeyError:
            raise UnknownCall(f"no device named {name!r}") from None

    def resolve(self, qualified: str) -> tuple[Device, Call]:
        """``"calculator.evaluate"`` -> (device, call). A device with one call may be named alone."""
        device_name, _, call_name = qualified.partition(".")
        device = self.get(device_name)
        if not call_name and len(device.calls) == 1:
            call_name = next(iter(device.calls))
        if call_name not in device.calls:
            known = ", ".join(f"{device.name}.{c}" for c in device.calls)
            raise UnknownCall(f"device {device.name!r} has no call {call_name!r} (it has {known})")
        return device, device.calls[call_name]

    def calls(self) -> list[tuple[str, Call]]:
        return [(f"{d.name}.{c.name}", c) for d in self._devices.values() for c in d.calls.values()]
