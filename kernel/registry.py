"""The device registry: which devices the kernel has, found through one entry-point group, and
their lifecycle (start: setup, stop: teardown).

An entry point names a device (a module-level one, the v0 form) or a factory (called once per
registry, so each kernel has its own device objects; a factory that takes a DeviceContext is
called at start, with its settings, and may make several devices: the MCP servers). Either way
each registry keeps its own *instance* of a device: its folder, its settings and the state its
setup returned (:class:`Instance`), which calls read from their CallContext.

Every call's arguments must have a grammar llama.cpp accepts (:mod:`.syscalls.grammar`): a call
whose schema cannot have one is refused when its device is registered (``refused``, one line
each, shown by ``llmos devices``) and left out of the prompt; the device's other calls work.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .devices import Call, Device, DeviceContext, DeviceFactory, Unavailable
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


@dataclass
class Instance:
    """A device as this registry runs it: its folder and settings, and what its setup returned."""

    data_dir: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    state: Any = None


@dataclass
class _Factory:
    name: str  # the entry point's name: its settings section and folder
    target: str
    make: DeviceFactory
    made: list[str] = field(default_factory=list)  # the devices it made at the last start


def _takes_context(factory: DeviceFactory) -> bool:
    try:
        return bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: called bare
        return False


class DeviceRegistry:
    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        self.broken: list[BrokenPlugin] = []
        self.refused: dict[str, RefusedCall] = {}  # "device.call" -> why
        self._grammars: dict[str, str] = {}  # "device.call" -> its GBNF, checked in Python
        self._instances: dict[str, Instance] = {}  # the started devices, in start order
        self._factories: list[_Factory] = []  # called at start, with a DeviceContext
        self._prepared: tuple[Path, dict[str, dict[str, Any]]] | None = None
        self._broken_at_start = 0
        self._failed: list[Device] = []  # unregistered because their setup raised, this start
        self.started = False

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> "DeviceRegistry":
        """Load every device registered under ``group`` (built-ins and plugins alike): a device,
        or a factory (a bare one is called now; one that takes a DeviceContext at start)."""
        registry = cls()
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                obj = ep.load()
                if isinstance(obj, Device):
                    registry.register(obj)
                elif callable(obj) and _takes_context(obj):
                    registry._factories.append(_Factory(ep.name, ep.value, obj))
                elif callable(obj):
                    registry.add_made(ep.name, ep.value, obj())
                else:
                    raise TypeError(f"{ep.value} is a {type(obj).__name__}, not a Device")
            except Exception as exc:  # a broken plugin must not stop the OS
                log.warning("device plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                registry.broken.append(BrokenPlugin(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
        return registry

    def add_made(self, name: str, target: str, made: Device | Iterable[Device | Unavailable]) -> list[str]:
        """Register what a factory made (a device, or several and Unavailable records, which are
        listed as broken); the names registered."""
        items = [made] if isinstance(made, Device) else list(made)
        names = []
        for item in items:
            if isinstance(item, Unavailable):
                self.broken.append(BrokenPlugin(f"{name}.{item.name}", f"{target} ({item.name})", item.error))
                continue
            if not isinstance(item, Device):
                raise TypeError(f"{target} made a {type(item).__name__}, not a Device")
            try:
                self.register(item)
                names.append(item.name)
            except ValueError as exc:  # the same name as another device
                self.broken.append(BrokenPlugin(f"{name}.{item.name}", target, str(exc)))
                item.stop(None)
        return names

    def prepare(self, data_dir: Path, settings: dict[str, dict[str, Any]] | None = None) -> None:
        """Remember how to start the devices; :meth:`start` without arguments (``Kernel.start``)
        starts them then, so a kernel built but not started holds no device resources."""
        self._prepared = (data_dir, dict(settings or {}))

    def start(self, data_dir: Path | None = None, settings: dict[str, dict[str, Any]] | None = None) -> None:
        """Start every device with its own folder under ``data_dir/devices`` (without arguments:
        those given to :meth:`prepare`; nothing when there are none); a failure unregisters it.
        The factories that take a DeviceContext make their devices first. Once only, until stop."""
        if data_dir is None:
            if self._prepared is None:
                return
            data_dir, settings = self._prepared
        if self.started:
            return
        self.started = True
        self._broken_at_start = len(self.broken)
        settings = settings or {}
        for factory in self._factories:
            context = DeviceContext(data_dir / "devices" / factory.name, dict(settings.get(factory.name, {})))
            try:
                factory.made = self.add_made(factory.name, factory.target, factory.make(context))
            except Exception as exc:
                log.warning("device factory %s (%s) failed: %s", factory.name, factory.target, exc)
                self.broken.append(BrokenPlugin(factory.name, factory.target, f"{type(exc).__name__}: {exc}"))
        made = {name for factory in self._factories for name in factory.made}
        for device in list(self._devices.values()):
            context = DeviceContext(data_dir / "devices" / device.name, dict(settings.get(device.name, {})))
            try:
                state = device.start(context)
            except Exception as exc:
                log.warning("device %s failed to start: %s", device.name, exc)
                self.unregister(device.name)
                if device.name not in made:  # a factory makes its devices anew at the next start
                    self._failed.append(device)
                self.broken.append(BrokenPlugin(device.name, f"{device.name} (start)", f"{type(exc).__name__}: {exc}"))
            else:
                self._instances[device.name] = Instance(context.data_dir, context.settings, state)

    def stop(self) -> None:
        """Tear every started device down (last started first; a failing teardown is logged) and
        forget what the factories made at start. Idempotent; :meth:`start` may start them again."""
        for name, instance in reversed(list(self._instances.items())):
            device = self._devices.get(name)
            try:
                if device is not None:
                    device.stop(instance.state)
            except Exception:
                log.exception("device %s failed to stop", name)
        self._instances.clear()
        for factory in self._factories:
            for name in factory.made:
                self.unregister(name)
            factory.made = []
        del self.broken[self._broken_at_start:]  # what failed at this start is tried again at the next
        for device in self._failed:
            self.register(device)
        self._failed = []
        self.started = False

    def instance(self, name: str) -> Instance:
        """This registry's instance of device ``name`` (empty when it was not started)."""
        return self._instances.get(name) or Instance()

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
