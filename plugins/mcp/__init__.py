"""The MCP bridge: each configured MCP server (stdio) becomes a llmos device.

It registers like every device, through the ``llmos.devices`` entry-point group: the entry point
``mcp`` names the factory :func:`make_devices`, which the registry calls at start with the
settings ``servers`` (the config's ``[mcp.servers]``) and ``pins_file``. Each registry (each
kernel) starts its own server processes, and its stop (``Kernel.shutdown``) ends them: every
device's teardown closes the bridge that started it.

Config (TOML, one table per server)::

    [mcp.servers.time]
    command = "python"
    args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]
    env = {}                 # optional, added to the SDK's safe default environment
    cwd = "..."              # optional
    permissions = []         # optional, default ["network"] (see DEFAULT_PERMISSIONS)
    timeout_s = 30           # optional, per call
    startup_timeout_s = 20   # optional, start + initialize + list tools
    side_effects = false     # optional, mark every call as acting on the world

Each server -> ``Device(name=<sanitised server name>)``, one call per tool (sanitised tool name,
the tool's description and its JSON input schema). A call's destinations are the URLs among its
arguments (a fetch tool's ``url``); a network server's call without one counts as going somewhere
new once the conversation has read untrusted content. Results are always
``Untrusted(text, source="mcp:<server>")``; a tool result with ``isError`` raises DeviceError.

With a :class:`~.pins.PinStore` (the OS passes ``<data_dir>/mcp_pins.json``), a server's tool list
is pinned the first time it is seen; a new or changed tool is held back (not offered to the model)
until ``llmos devices approve SERVER`` (:mod:`.pins`). Descriptions are untrusted text anyway:
the boot prompt shows them escaped, on one line, cut to 300 characters (``kernel/prompt.py``).

Design: one asyncio loop on a daemon thread owns every session. Each server has a runner task
that enters ``stdio_client`` + ``ClientSession`` (anyio cancel scopes must be entered and left in
the same task), initialises, lists the tools, then waits for its stop event. A device call is a
blocking function that submits ``session.call_tool`` to that loop with
``asyncio.run_coroutine_threadsafe`` and waits with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.kernel.devices import (
    Call, Device, DeviceContext, DeviceError, Unavailable, Untrusted, current_call, finite_timeout,
)

from .pins import INSTRUCTIONS, PinStore, tool_hash

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PERMISSIONS", "MCPBridge", "PinStore", "make_devices", "sanitise_name", "start_mcp", "urls_in"]

# An MCP server is a program the user chose to run; what it touches is unknown to llmos. Default:
# it needs "network" (most servers fetch or query something); declare `permissions` per server
# to say more (e.g. ["files.read", "files.write"]) or less ([] for a local clock).
DEFAULT_PERMISSIONS: tuple[str, ...] = ("network",)
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_STARTUP_TIMEOUT_S = 20.0


def sanitise_name(raw: str, prefix: str = "mcp") -> str:
    """``"Get-Current Time"`` -> ``"get_current_time"``: [a-z][a-z0-9_]*, at most 40 characters."""
    name = re.sub(r"[^a-z0-9_]+", "_", raw.strip().lower()).strip("_")
    name = re.sub(r"_+", "_", name)
    if not name or not name[0].isalpha():
        name = f"{prefix}_{name}".rstrip("_")
    return name[:40].rstrip("_") or prefix


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First attribute present (the SDK moved from camelCase to snake_case fields)."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _content_text(block: Any) -> str:
    """One content block as text; non-text content is summarised."""
    kind = getattr(block, "type", "")
    if kind == "text":
        return block.text
    if kind in ("image", "audio"):
        data = getattr(block, "data", "") or ""
        return f"[{kind}: {_get(block, 'mime_type', 'mimeType', default='?')}, {len(data) * 3 // 4:,} bytes not shown]"
    if kind == "resource_link":
        return f"[resource link: {getattr(block, 'uri', '')} {getattr(block, 'name', '') or ''}]".replace(" ]", "]")
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if text is not None:
            return text
        return f"[resource: {getattr(resource, 'uri', '')}, {_get(resource, 'mime_type', 'mimeType', default='binary')}, not shown]"
    return f"[{kind or type(block).__name__} content not shown]"


def result_text(result: Any) -> str:
    blocks = list(getattr(result, "content", None) or [])
    text = "\n".join(_content_text(b) for b in blocks)
    if not text:
        structured = _get(result, "structured_content", "structuredContent")
        if structured is not None:
            text = json.dumps(structured, ensure_ascii=False, default=str)
    return text


def urls_in(arguments: Any) -> list[str] | None:
    """The http(s) URLs among a tool call's argument values (nested too), or None when there are
    none: then llmos cannot tell where the server will connect, so after untrusted content the
    call counts as reaching a new destination (the user is asked)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if re.match(r"(?i)https?://", value.strip()):
                found.append(value.strip())
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(arguments)
    return found or None


def _schema(tool: Any) -> dict[str, Any]:
    schema = _get(tool, "input_schema", "inputSchema", default=None)
    schema = dict(schema) if isinstance(schema, dict) else {}
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


@dataclass
class _Server:
    name: str  # sanitised device name
    config: dict[str, Any]
    session: Any = None
    stop: asyncio.Event | None = None
    task: asyncio.Future | None = None
    tools: list[Any] = field(default_factory=list)
    info: Any = None


class MCPBridge:
    """Owns the loop thread and the server sessions; ``devices`` and ``errors`` after start."""

    def __init__(self, pins: PinStore | None = None) -> None:
        self.devices: list[Device] = []
        self.errors: list[tuple[str, str]] = []
        self.pins = pins
        self.held: list[tuple[str, str]] = []  # (server, why some tools are held back)
        self._servers: dict[str, _Server] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-bridge", daemon=True)
        self._thread.start()
        self._closed = False
        self._devnull = open(os.devnull, "w")  # the servers' stderr

    # --- starting -------------------------------------------------------------------------

    def start(self, servers: dict[str, dict[str, Any]]) -> "MCPBridge":
        pending: list[tuple[_Server, Any, float]] = []
        for raw_name, config in (servers or {}).items():
            name = sanitise_name(str(raw_name))
            try:
                if name in self._servers or any(d.name == name for d in self.devices):
                    raise ValueError(f"two MCP servers are named {name!r}")
                if not isinstance(config, dict) or not config.get("command"):
                    raise ValueError("the server needs a `command`")
                server = _Server(name, dict(config))
                self._servers[name] = server
                startup = finite_timeout(config.get("startup_timeout_s", DEFAULT_STARTUP_TIMEOUT_S),
                                         "startup_timeout_s")
                ready = asyncio.run_coroutine_threadsafe(self._open(server), self._loop)
                pending.append((server, ready, startup))
            except Exception as exc:
                self.errors.append((name, f"MCP server {raw_name!r}: {exc}"))
        for server, ready, startup in pending:  # servers start concurrently
            try:
                ready.result(timeout=startup)
                self.devices.append(self._device(server))
            except Exception as exc:
                ready.cancel()
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if isinstance(exc, TimeoutError):
                    message = f"did not start and list its tools within {startup:g} s"
                self.errors.append((server.name, f"MCP server {server.name!r} "
                                                 f"({_command_line(server.config)}) failed: {message}"))
                self._stop_server(server)
                self._servers.pop(server.name, None)
        return self

    async def _open(self, server: _Server) -> None:
        """Start the runner task; return once its tools are listed (or raise its error)."""
        ready: asyncio.Future = self._loop.create_future()
        server.stop = asyncio.Event()
        server.task = asyncio.ensure_future(self._run(server, ready))
        try:
            await asyncio.shield(ready)
        except asyncio.CancelledError:
            server.stop.set()
            raise

    async def _run(self, server: _Server, ready: asyncio.Future) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        config = server.config
        params = StdioServerParameters(
            command=str(config["command"]),
            args=[str(a) for a in config.get("args", [])],
            env={str(k): str(v) for k, v in config["env"].items()} if config.get("env") else None,
            cwd=config.get("cwd"),
        )
        try:
            async with stdio_client(params, errlog=self._devnull) as (read, write):
                async with ClientSession(read, write) as session:
                    server.info = await session.initialize()
                    tools, cursor = [], None
                    while True:
                        listed = await (session.list_tools(cursor) if cursor else session.list_tools())
                        tools.extend(listed.tools)
                        cursor = _get(listed, "next_cursor", "nextCursor")
                        if not cursor:
                            break
                    server.tools, server.session = tools, session
                    if not ready.done():
                        ready.set_result(None)
                    await server.stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            elif not isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                log.warning("MCP server %s stopped: %s", server.name, exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            server.session = None

    # --- the devices ----------------------------------------------------------------------

    def _offered(self, server: _Server, instructions: str) -> tuple[list[Any], bool]:
        """The tools the pins allow (all without pins), and whether the instructions are pinned."""
        if self.pins is None:
            return list(server.tools), True
        seen = [(INSTRUCTIONS, tool_hash(INSTRUCTIONS, instructions, None))]
        seen += [(t.name, tool_hash(t.name, t.description or "", _schema(t))) for t in server.tools]
        check = self.pins.check(server.name, seen)
        if check.held:
            log.warning("%s", check.message())
            self.held.append((server.name, check.message()))
        return [t for t in server.tools if t.name in check.offered], INSTRUCTIONS in check.offered

    def _device(self, server: _Server) -> Device:
        config = server.config
        info = _get(server.info, "server_info", "serverInfo")
        instructions = (_get(server.info, "instructions", default="") or "").strip()
        tools, instructions_pinned = self._offered(server, instructions)
        description = config.get("description") or (instructions_pinned and instructions.split("\n\n", 1)[0][:300]) or (
            f"Tools of the MCP server {server.name!r}: " + ", ".join(t.name for t in tools))
        permissions = config.get("permissions")
        device = Device(
            server.name,
            version=str(_get(info, "version", default="0") or "0"),
            description=description,
            permissions=list(DEFAULT_PERMISSIONS if permissions is None else permissions),
        )
        timeout = finite_timeout(config.get("timeout_s", DEFAULT_TIMEOUT_S), "timeout_s")
        for tool in tools:
            call_name = sanitise_name(tool.name, prefix="tool")
            base, n = call_name, 2
            while call_name in device.calls:
                call_name, n = f"{base[:37]}_{n}", n + 1
            annotations = getattr(tool, "annotations", None)
            destructive = bool(annotations) and _get(annotations, "destructive_hint", "destructiveHint") is True \
                and _get(annotations, "read_only_hint", "readOnlyHint") is not True
            device.calls[call_name] = Call(
                name=call_name,
                function=self._forward(server, tool.name, timeout),
                description=(tool.description or _get(tool, "title", default="") or tool.name).strip(),
                parameters=_schema(tool),
                timeout_s=timeout + 2.0,  # the bridge's own timeout answers first, with a clear message
                side_effects=bool(config.get("side_effects", False)) or destructive,
                destinations=urls_in,
            )
        return device

    def _forward(self, server: _Server, tool_name: str, timeout: float) -> Callable[..., Untrusted]:
        source = f"mcp:{server.name}"

        def call(**kwargs: Any) -> Untrusted:
            session = server.session
            if session is None or self._closed:
                raise DeviceError(f"the MCP server {server.name!r} is not running")
            context = current_call()
            with context.commit():  # a cancelled call never reaches the server
                future = asyncio.run_coroutine_threadsafe(session.call_tool(tool_name, kwargs), self._loop)
                context.on_cancel(future.cancel)  # abandoned: the request is cancelled, its answer dropped
            try:
                result = future.result(timeout=timeout)
            except TimeoutError:
                future.cancel()
                raise DeviceError(f"the MCP server {server.name!r} did not answer {tool_name} "
                                  f"within {timeout:g} s") from None
            except DeviceError:
                raise
            except Exception as exc:  # protocol errors (unknown tool, invalid params, closed pipe)
                raise DeviceError(f"MCP server {server.name!r}, tool {tool_name}: "
                                  f"{getattr(exc, 'message', None) or exc or type(exc).__name__}") from None
            if not hasattr(result, "content"):
                raise DeviceError(f"MCP server {server.name!r}, tool {tool_name}: the server asked for "
                                  "input, which llmos does not support")
            text = result_text(result)
            if _get(result, "is_error", "isError", default=False):
                raise DeviceError(text or f"MCP tool {tool_name} failed")
            return Untrusted(text, source=source)

        call.__name__ = sanitise_name(tool_name, prefix="tool")
        return call

    # --- stopping -------------------------------------------------------------------------

    def _stop_server(self, server: _Server, wait_s: float = 5.0) -> None:
        async def stop() -> None:
            if server.stop is not None:
                server.stop.set()
            if server.task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(server.task), wait_s)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    server.task.cancel()
                except Exception:
                    pass

        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=wait_s + 2)
            except Exception as exc:
                log.warning("stopping MCP server %s: %s", server.name, exc)

    def release(self, name: str) -> None:
        """Stop the server ``name`` (its device's teardown); the last one released closes the bridge."""
        server = self._servers.pop(name, None)
        if server is not None and not self._closed:
            self._stop_server(server)
        if not self._servers:
            self.close()

    def close(self) -> None:
        """Stop every server (their subprocesses end) and the loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for server in list(self._servers.values()):
            self._stop_server(server)
        self._servers.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._devnull.close()


def _command_line(config: dict[str, Any]) -> str:
    return " ".join([str(config.get("command", ""))] + [str(a) for a in config.get("args", [])])


def start_mcp(servers: dict[str, dict[str, Any]], pins: PinStore | None = None) -> MCPBridge:
    """Start ``servers``; the bridge holds ``devices``, ``errors`` [(name, message)], ``held``
    [(name, message)] (tools held back by ``pins``) and ``close()``."""
    return MCPBridge(pins).start(servers)


def make_devices(context: DeviceContext) -> list[Device | Unavailable]:
    """The entry point's factory: start ``context.settings["servers"]`` (pinned in the file
    ``pins_file`` when given); a device per server that started, an Unavailable for each one that
    did not or whose tools are held back. The devices' teardown ends the servers."""
    servers = context.settings.get("servers") or {}
    if not servers:
        return []
    pins_file = context.settings.get("pins_file")
    bridge = start_mcp(servers, PinStore(Path(pins_file)) if pins_file else None)
    for device in bridge.devices:  # each ends its own server (one refused for its name ends only that one)
        device.teardown(lambda _state, name=device.name: bridge.release(name))
    if not bridge.devices:
        bridge.close()
    return [*bridge.devices, *(Unavailable(name, error) for name, error in [*bridge.errors, *bridge.held])]
