"""The device registry: which devices the kernel has, found through one entry-point group.

Every call's arguments must have a grammar llama.cpp accepts (:mod:`.syscalls.grammar`): a call
whose schema cannot have one is refused when its device is registered (``refused``, one line
each, shown by ``llmos devices``) and left out of the prompt; the device's other calls work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .devices import Call, Device, DeviceContext
from .syscalls.grammar import GrammarError, check_call

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llmos.devices"


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to load: shown by `llmos devices`, never fatal."""

    name: str
    target: str
    error: str


@dataclass(frozen=True)
class RefusedCall:
    """A call the model cannot make: its arguments have no grammar llama.cpp accepts."""

    device: str
    call: str
    reason: str

    def __str__(self) -> str:
        return f"device {self.device}, call {self.call}: {self.reason}"


class UnknownCall(LookupError):
    pass


class DeviceRegistry:
    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        self.broken: list[BrokenPlugin] = []
        self.refused: dict[str, RefusedCall] = {}  # "device.call" -> why
        self._grammars: dict[str, str] = {}  # "device.call" -> its GBNF, checked in Python

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
                self.unregister(device.name)
                self.broken.append(BrokenPlugin(device.name, f"{device.name} (start)", f"{type(exc).__name__}: {exc}"))

    def register(self, device: Device) -> None:
        """Add ``device``; each call whose schema has no grammar llama.cpp accepts is refused."""
        if device.name in self._devices:
            raise ValueError(f"a device named {device.name!r} is already registered")
        for call in device.calls.values():
            name = f"{device.name}.{call.name}"
            try:
                self._grammars[name] = check_call(device.name, call.name, call.parameters)
            except GrammarError as exc:
                self._refuse(exc)
        self._devices[device.name] = device

    def unregister(self, name: str) -> None:
        self._devices.pop(name, None)
        for table in (self.refused, self._grammars):
            for key in [k for k in table if k.partition(".")[0] == name]:
                del table[key]

    def _refuse(self, error: GrammarError) -> None:
        refused = RefusedCall(error.device, error.call, error.reason)
        log.warning("refused %s", refused)
        self.refused[f"{error.device}.{error.call}"] = refused
        self._grammars.pop(f"{error.device}.{error.call}", None)

    def verify_grammars(self, compile_grammar: Callable[[str], None]) -> list[RefusedCall]:
        """Compile every call's grammar in the engine itself (``compile_grammar`` raises
        GrammarError); refuse the calls it does not take. Returns the newly refused."""
        refused = []
        for name, grammar in list(self._grammars.items()):
            device, _, call = name.partition(".")
            try:
                compile_grammar(grammar)
            except GrammarError as exc:
                self._refuse(exc.at(device, call))
                refused.append(self.refused[name])
        return refused

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
        refused = self.refused.get(f"{device.name}.{call_name}")
        if refused is not None:
            raise UnknownCall(f"{refused} (the call is refused)")
        return device, device.calls[call_name]

    def calls(self) -> list[tuple[str, Call]]:
        """Every call the model may make (refused calls are left out)."""
        return [(f"{d.name}.{c.name}", c) for d in self._devices.values() for c in d.calls.values()
                if f"{d.name}.{c.name}" not in self.refused]
