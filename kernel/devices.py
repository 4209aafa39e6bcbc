"""The device API: the one public module for plugin authors (v0).

A device is what the kernel acts on the world through. It declares a manifest (name, version,
description, the permissions it needs) and its calls, plain typed Python functions whose JSON
schema comes from their signature and docstring::

    from llmos.kernel.devices import Device, Example

    device = Device("weather", version="1.0", description="Weather forecasts.",
                    permissions=["network"])

    @device.call(examples=[Example("Will it rain in Oslo?", {"city": "Oslo"})])
    def forecast(city: str, days: int = 1) -> str:
        \"\"\"Tomorrow's forecast for a city.

        Args:
            city: The city name.
            days: How many days ahead.
        \"\"\"

Register it in your package's ``pyproject.toml`` under the entry-point group ``llmos.devices``
(``weather = "llmos_weather:device"``). The built-in devices register through the same group.

The entry point may also name a *factory*: a callable that returns a device (or several), called
once per registry, with no arguments or with a :class:`DeviceContext` (then at start, with the
settings). Either way a device is an instance with a lifecycle: ``@device.setup`` may return the
instance's state (each registry, and so each kernel, has its own; a call gets it as
``context.state`` from its :class:`CallContext`), and ``@device.teardown`` gets that state back
when the registry stops (``Kernel.shutdown``). State that belongs to a process (the browser's open
page) is kept by ``context.pid``, never in a module global.

A call reports failure by raising :class:`DeviceError` (or any exception): the kernel turns it
into an error page for the model; it never crashes the kernel. Results are plain values
(str, numbers, dicts, lists); return :class:`Untrusted` around text that came from outside
(web pages, files, other servers) so the kernel marks it as data, never instructions.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tempfile
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .call_context import CallContext, Caller, Cancelled, DeviceError, caller, commit, current_call

__all__ = [
    "Call",
    "CallContext",
    "Caller",
    "Cancelled",
    "Device",
    "DeviceContext",
    "DeviceError",
    "DeviceFactory",
    "Example",
    "Permission",
    "SAVED_FILE",
    "Unavailable",
    "Untrusted",
    "caller",
    "commit",
    "current_call",
    "destination",
    "finite_timeout",
    "one_line",
    "schema_from_function",
    "write_json_atomic",
]


class Permission(str, Enum):
    """What a device may touch. The user grants these; the kernel checks them before a call."""

    NETWORK = "network"
    FILES_READ = "files.read"
    FILES_WRITE = "files.write"
    MICROPHONE = "microphone"
    SPEAKER = "speaker"
    SCREEN = "screen"
    PROCESS = "process"


# A call of a device that holds one of these acts on the world: after a process has read
# untrusted content, such a call needs the user's consent for that very call.
SIDE_EFFECT_PERMISSIONS = frozenset({Permission.FILES_WRITE, Permission.PROCESS, Permission.SPEAKER})


# A result dict may name a file the call wrote under this key (an absolute path): the desktop
# shell shows it (an image inline), the CLI prints it. The model reads it as part of the result.
SAVED_FILE = "saved_file"

# A call's destinations: the network places it will contact, from its arguments ("host:port"
# strings or URLs), and optionally the device instance's settings (a second parameter); None =
# unknown. See ``@device.call(destinations=...)``.
Destinations = Callable[..., Iterable[str] | None]


def destination(address: str) -> str:
    """``"https://Example.com/x"`` -> ``"example.com:443"``; ``"host:8080"`` -> ``"host:8080"``.

    The unit the kernel counts when it asks whether a process reaches a *new* place after it has
    read untrusted content. Raises ValueError when there is no host.
    """
    text = address.strip()
    parts = urllib.parse.urlsplit(text if "//" in text else f"//{text}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"no host in {address[:200]!r}")
    port = parts.port or {"https": 443, "http": 80, "wss": 443, "ws": 80}.get(parts.scheme.lower())
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


@dataclass(frozen=True)
class Untrusted:
    """A result that came from outside (web, files, MCP): shown to the model as marked data."""

    value: Any
    source: str = ""


MAX_TIMEOUT_S = 86_400.0  # a day: a call's deadline past it is a mistake, not a wish


def finite_timeout(value: Any, what: str = "timeout_s") -> float:
    """``value`` as a call's timeout in seconds: a positive finite number up to a day, else a
    ValueError naming ``what`` (an infinite deadline would stop the watchdog timing calls out)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}") from None
    if not (0 < seconds <= MAX_TIMEOUT_S):
        raise ValueError(f"{what} must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds, not {value!r}")
    return seconds


@dataclass(frozen=True)
class DeviceContext:
    """What the OS hands a device when it starts: where it may keep its files, and its settings.

    ``data_dir`` is the device's own folder under the llmos data directory (created for it).
    """

    data_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unavailable:
    """What a factory returns, beside its devices, for one it could not make (an MCP server that
    did not start): listed as broken by `llmos devices`; the OS goes on without it."""

    name: str
    error: str


# An entry point's factory: ``factory()`` or ``factory(context)`` -> a device, or several (and
# Unavailable records for the ones it could not make).
DeviceFactory = Callable[..., "Device | Iterable[Device | Unavailable]"]


@dataclass(frozen=True)
class Example:
    """A request a person might make and the arguments this call should get for it.

    The kernel shows examples to the model when it decides whether (and what) to call.
    """

    request: str
    arguments: dict[str, Any]


@dataclass
class Call:
    """One call of a device: a function plus its JSON schema."""

    name: str
    function: Callable[..., Any]
    description: str
    parameters: dict[str, Any]
    examples: list[Example] = field(default_factory=list)
    timeout_s: float = 10.0
    side_effects: bool = False
    destinations: Destinations | None = None
    context_parameter: str | None = None  # the parameter that receives the CallContext, if any

    def destinations_for(self, arguments: dict[str, Any], settings: dict[str, Any] | None = None) -> list[str] | None:
        """Where this call will connect with ``arguments`` (normalised), or None when unknown.
        A declaration that takes two parameters also gets the device instance's ``settings``."""
        if self.destinations is None:
            return None
        try:
            takes_settings = len(inspect.signature(self.destinations).parameters) >= 2
            found = self.destinations(arguments, settings or {}) if takes_settings else self.destinations(arguments)
            return None if found is None else sorted({destination(str(d)) for d in found})
        except Exception:  # a bad address or a buggy declaration: unknown, so treated as new
            return None


class Device:
    """A device's manifest and calls."""

    def __init__(
        self,
        name: str,
        *,
        version: str = "0.1.0",
        description: str = "",
        permissions: list[str | Permission] | tuple[str | Permission, ...] = (),
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
            raise ValueError(f"device name {name!r}: use lower-case letters, digits and _ (max 40)")
        self.name = name
        self.version = version
        self.description = description
        self.permissions = tuple(Permission(p) for p in permissions)
        self.calls: dict[str, Call] = {}
        self._setup: Callable[[DeviceContext], Any] | None = None
        self._teardown: Callable[[Any], None] | None = None

    def setup(self, function: Callable[[DeviceContext], Any]) -> Callable[[DeviceContext], Any]:
        """Decorator: ``function(context)`` runs once when the OS starts the device.

        Open stores, read settings, check that what the device needs is there. What it returns is
        this instance's state (``CallContext.state`` in a call, the argument of the teardown).
        Raising here marks the device broken (listed by `llmos devices`); the OS goes on without it.
        """
        self._setup = function
        return function

    def teardown(self, function: Callable[[Any], None]) -> Callable[[Any], None]:
        """Decorator: ``function(state)`` runs when the OS stops the device (the registry stops,
        as the kernel shuts down), with what setup returned: close stores, end server processes."""
        self._teardown = function
        return function

    def start(self, context: DeviceContext) -> Any:
        """Run the setup hook; its return value is the instance's state."""
        if self._setup is None:
            return None
        context.data_dir.mkdir(parents=True, exist_ok=True)
        return self._setup(context)

    def stop(self, state: Any = None) -> None:
        """Run the teardown hook with the instance's state."""
        if self._teardown is not None:
            self._teardown(state)

    def call(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        examples: list[Example] | None = None,
        timeout_s: float = 10.0,
        side_effects: bool = False,
        destinations: Destinations | None = None,
    ) -> Any:
        """Decorator that adds a call; usable bare (``@device.call``) or with options.

        ``side_effects=True``: the call acts on the world (writes, runs, speaks, sends).
        ``destinations``: for a device with the ``network`` permission, a function from the call's
        arguments to the places it will contact (URLs or ``host:port``; ``[]`` for none). After a
        process has read untrusted content, a call to a place it has not contacted before needs
        the user's consent; a network call without this declaration counts as going somewhere new.
        """

        limit = finite_timeout(timeout_s)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            call_name = name or fn.__name__
            if call_name in self.calls:
                raise ValueError(f"device {self.name!r} already has a call {call_name!r}")
            description, parameters = schema_from_function(fn)
            for example in examples or []:
                unknown = set(example.arguments) - set(parameters["properties"])
                if unknown:
                    raise ValueError(f"example for {self.name}.{call_name} has unknown arguments {unknown}")
            self.calls[call_name] = Call(
                name=call_name,
                function=fn,
                description=description,
                parameters=parameters,
                examples=list(examples or []),
                timeout_s=limit,
                side_effects=side_effects,
                destinations=destinations,
                context_parameter=context_parameter(fn),
            )
            return fn

        return register(function) if function is not None else register

    def has_side_effects(self, call: Call) -> bool:
        """Does ``call`` act on the world? Declared per call; a device that declares it for none of
        its calls but holds a permission that acts (``files.write``, ``process``, ``speaker``) is
        taken to act with every call. A device that marks some calls is taken at its word for
        the rest (the image device's ``info`` only reads)."""
        if call.side_effects:
            return True
        if any(c.side_effects for c in self.calls.values()):
            return False
        return any(p in SIDE_EFFECT_PERMISSIONS for p in self.permissions)

    def manifest(self) -> dict[str, Any]:
        """The device as plain data (what `llmos devices --json` prints)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "permissions": [p.value for p in self.permissions],
            "calls": [
                {
                    "name": f"{self.name}.{c.name}",
                    "description": c.description,
                    "parameters": c.parameters,
                    "side_effects": self.has_side_effects(c),
                    "timeout_s": c.timeout_s,
                }
                for c in self.calls.values()
            ],
        }

    def __repr__(self) -> str:
        return f"Device({self.name!r}, version={self.version!r}, calls={list(self.calls)})"


# --- schema from type hints and docstrings -------------------------------------------------

_SIMPLE_TYPES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dict: {"type": "object"},
    list: {"type": "array"},
}


def _json_type(hint: Any) -> tuple[dict[str, Any], bool]:
    """JSON schema for a type hint, and whether None is allowed."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema, nullable = _json_type(args[0])
        extra = next((a for a in args[1:] if isinstance(a, dict)), None)
        return ({**schema, **extra} if extra else schema), nullable
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            schema, _ = _json_type(rest[0])
            return schema, len(rest) != len(args)
        return {"anyOf": [_json_type(a)[0] for a in rest]}, len(rest) != len(args)
    if origin is typing.Literal:
        return {"enum": list(args)}, False
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        item = _json_type(args[0])[0] if args else {}
        return ({"type": "array", "items": item} if item else {"type": "array"}), False
    if origin is dict:
        return {"type": "object"}, False
    if hint in _SIMPLE_TYPES:
        return dict(_SIMPLE_TYPES[hint]), False
    if isinstance(hint, type) and issubclass(hint, Enum):
        return {"enum": [m.value for m in hint]}, False
    raise TypeError(f"unsupported parameter type {hint!r}: use str, int, float, bool, list, dict, Literal")


_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s*(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google-style docstring -> (description, {argument: description})."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    description: list[str] = []
    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines:
        if _ARGS_HEADER.match(line):
            in_args = True
            continue
        if in_args:
            if line and not line.startswith(" ") and line.rstrip().endswith(":"):
                in_args = False  # another section (Returns:, Raises:)
                continue
            match = _ARG_LINE.match(line)
            if match and line.startswith("    ") and not line.startswith("        "):
                current = match.group(1)
                args[current] = match.group(3).strip()
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
            continue
        description.append(line)
    text = "\n".join(description).strip()
    first_paragraph = text.split("\n\n", 1)[0].replace("\n", " ").strip()
    return first_paragraph, args


def context_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of ``fn``'s parameter typed :class:`CallContext` (the OS fills it), or None."""
    hints = typing.get_type_hints(fn)
    return next((name for name in inspect.signature(fn).parameters if hints.get(name) is CallContext), None)


def schema_from_function(fn: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """(description, JSON schema of the parameters) from ``fn``'s signature and docstring.

    A parameter typed :class:`CallContext` is the OS's to fill, not the model's: left out."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    description, arg_docs = _parse_docstring(fn.__doc__ or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in signature.parameters.items():
        if hints.get(pname) is CallContext:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: *args and **kwargs cannot become a JSON schema")
        if pname not in hints:
            raise TypeError(f"{fn.__name__}: parameter {pname!r} needs a type hint")
        schema, _nullable = _json_type(hints[pname])
        if pname in arg_docs:
            schema["description"] = arg_docs[pname]
        if param.default is param.empty:
            required.append(pname)
        elif param.default is not None:
            schema["default"] = param.default
        properties[pname] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        parameters["required"] = required
    return description or fn.__name__.replace("_", " "), parameters


def write_json_atomic(path: Path, data: Any, **dump: Any) -> None:
    """Write ``data`` as JSON to ``path`` whole or not at all: a temporary file in the same folder,
    fsynced, then renamed over ``path`` (a crash leaves the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, **dump)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def one_line(value: object, limit: int | None = 300) -> str:
    """An error or a text as one line: whitespace collapsed (an exception without a message is
    named by its type), cut to ``limit`` characters with "..." (None: not cut)."""
    text = " ".join(str(value).split()) or (type(value).__name__ if isinstance(value, BaseException) else "")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
