"""The `llmos` command line. It prints; the kernel only logs.

    llmos                      the desktop window (or the terminal chat when there is no display)
    llmos ask "..." [--json]   one request, streamed, with each system call shown as it happens
    llmos chat                 an interactive terminal chat
    llmos devices [--json]     the devices, their calls and permissions
    llmos devices call NAME --args JSON   call a device directly, as the kernel would
    llmos voice [--input WAV --output WAV --json]   hands-free voice (app/voice_cli.py)
    llmos serve [--host H --port P --api-key KEY]   an OpenAI-compatible API (app/serve_cli.py)
    llmos ps [--url URL] [--json]                   the processes of a running server (app/ps_cli.py)
    llmos doctor [--json] [--recheck] [--model PATH]   check what llmos needs (app/doctor.py)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from llmos.app import doctor, history_cli, memory_cli, ps_cli, serve_cli, supervisor, voice_cli
from llmos.kernel import crash_hooks, events
from llmos.kernel.backends.base import BackendError
from llmos.kernel.config import Config, ConfigError, load_config
from llmos.kernel.process import Priority

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


# Options that mean the same for every command. They are accepted before the command and after
# it, at every level (`llmos --yes ask ...`, `llmos ask --yes ...`, `llmos memory add --data-dir D
# ...`); given twice, the later one wins. A command that defines one of these itself keeps its own.
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--model",), {"help": "GGUF model file (default: the embedded Qwen2.5-Coder-0.5B)"}),
    (("--backend",), {"choices": ["llamacpp", "openai"], "help": "where the kernel's model runs"}),
    (("--base-url",), {"help": "OpenAI-compatible server URL, for --backend openai"}),
    (("--api-key",), {"help": "bearer token for the remote server"}),
    (("--remote-model",), {"help": "model name to ask the remote server for"}),
    (("--n-ctx",), {"type": int, "help": "context window in tokens"}),
    (("--threads",), {"type": int, "help": "CPU threads for llama.cpp"}),
    (("--data-dir",), {"help": "where the journal, stores and snapshots live"}),
    (("--config",), {"help": "config file (TOML)"}),
    (("--yes",), {"action": "store_true", "help": "grant every permission devices ask for, for this run"}),
    (("-v", "--verbose"), {"action": "store_true", "help": "log what the kernel does"}),
)


def add_global_options(parser: argparse.ArgumentParser, *, top: bool = True) -> None:
    """Add GLOBAL_OPTIONS to ``parser``. Below the top (``top=False``) they default to
    SUPPRESS, so a command that is not given one leaves the value parsed before it alone."""
    target: Any = parser if top else parser.add_argument_group(
        "global options (also accepted before the command)")
    for flags, spec in GLOBAL_OPTIONS:
        if any(flag in parser._option_string_actions for flag in flags):
            continue  # the command has an option of that name: its own meaning wins
        target.add_argument(*flags, **spec, **({} if top else {"default": argparse.SUPPRESS}))


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command parser below ``parser``, nested ones included (an alias counted once)."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):
                found += [command, *_commands(command)]
    return found


def build_parser() -> argparse.ArgumentParser:
    """The whole `llmos` parser: every command, each also accepting the global options."""
    parser = _parser()
    for command in _commands(parser):
        add_global_options(command, top=False)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmos", description="A desktop LLM operating system.")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command")

    ask = sub.add_parser("ask", help="ask one question and print the answer")
    ask.add_argument("text", help="the request")
    ask.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")

    chat = sub.add_parser("chat", help="interactive chat in the terminal")
    chat.add_argument("--resume", metavar="ID", help="continue a journaled conversation (id or unique prefix)")
    history_cli.add_parsers(sub)
    sub.add_parser("gui", help="the desktop window")

    devices = sub.add_parser("devices", help="list devices, or call one")
    devices.add_argument("--json", action="store_true", help="machine-readable output")
    dsub = devices.add_subparsers(dest="devices_command")
    call = dsub.add_parser("call", help="call a device directly, as the kernel would")
    call.add_argument("name", help="device.call, e.g. calculator.evaluate")
    call.add_argument("--args", default="{}", help="JSON object of arguments")
    grant = dsub.add_parser("grant", help="remember a permission for a device")
    grant.add_argument("device", help="device name, e.g. browser")
    grant.add_argument("permissions", nargs="+", metavar="PERMISSION", help="e.g. network, files.read")
    revoke = dsub.add_parser("revoke", help="forget a device's permissions (all when none are named)")
    revoke.add_argument("device", help="device name, e.g. browser")
    revoke.add_argument("permissions", nargs="*", metavar="PERMISSION", help="e.g. network (default: all)")
    approve = dsub.add_parser("approve", help="offer an MCP server's new or changed tools to the model")
    approve.add_argument("device", help="the MCP server's device name")
    memory_cli.add_parser(sub)
    voice_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    ps_cli.add_parser(sub)
    doctor.add_parser(sub)
    return parser


def _config(args: argparse.Namespace) -> Config:
    from pathlib import Path

    overrides = {
        "model": args.model, "backend": args.backend, "base_url": args.base_url, "api_key": args.api_key,
        "remote_model": args.remote_model, "n_ctx": args.n_ctx, "threads": args.threads,
        "data_dir": args.data_dir,
    }
    return load_config(Path(args.config) if args.config else None, overrides=overrides)


def _error(message: str) -> int:
    print(f"llmos: {message}", file=sys.stderr)
    return EXIT_ERROR


# --- devices ---------------------------------------------------------------------------------


def cmd_devices(args: argparse.Namespace, config: Config) -> int:
    from llmos.app.boot import build_registry

    registry = build_registry(config)
    try:
        return _devices(args, config, registry)
    finally:
        registry.stop()  # the devices' teardown: MCP server processes end


def _devices(args: argparse.Namespace, config: Config, registry: Any) -> int:
    from llmos.app.boot import grant_policy
    from llmos.kernel.syscalls.dispatch import Dispatcher

    if args.devices_command == "call":
        try:
            arguments = json.loads(args.args)
        except json.JSONDecodeError as exc:
            return _error(f"--args is not valid JSON: {exc}")
        dispatcher = Dispatcher(registry, grant_policy(config, args.yes,
                                                       ask=_tty_permission if sys.stdin.isatty() else None))
        try:
            result = dispatcher.call_blocking(args.name, arguments)
        finally:
            dispatcher.close()
        if args.json:
            print(json.dumps(result.as_dict(), ensure_ascii=False))
        elif result.ok:
            print(result.text())
        else:
            print(f"error: {result.error}", file=sys.stderr)
        return EXIT_OK if result.ok else EXIT_ERROR
    if args.devices_command in ("grant", "revoke"):
        return _devices_grant_revoke(args, config, registry)
    if args.devices_command == "approve":
        return _devices_approve(args, config)
    policy = grant_policy(config)
    manifests = [d.manifest() for d in registry.devices()]
    for m, d in zip(manifests, registry.devices()):
        m["granted"] = sorted(p.value for p in d.permissions if p not in policy.missing(d))
    if args.json:
        broken = [{"name": b.name, "target": b.target, "error": b.error} for b in registry.broken]
        refused = [{"device": r.device, "call": r.call, "reason": r.reason} for r in registry.refused.values()]
        print(json.dumps({"devices": manifests, "broken": broken, "refused": refused}, indent=2, ensure_ascii=False))
        return EXIT_OK
    for m in manifests:
        perms = ", ".join(f"{p} ({'granted' if p in m['granted'] else 'not granted'})"
                          for p in m["permissions"]) or "none"
        print(f"{m['name']} {m['version']}  permissions: {perms}")
        print(f"  {m['description']}")
        for c in m["calls"]:
            params = ", ".join(
                f"{k}: {v.get('type', 'any')}" for k, v in c["parameters"]["properties"].items()
            )
            print(f"  - {c['name']}({params})  {c['description']}")
    for r in registry.refused.values():
        print(f"! refused {r}")
    for b in registry.broken:
        print(f"! {b.name} ({b.target}) failed to load: {b.error}")
    return EXIT_OK


def _devices_grant_revoke(args: argparse.Namespace, config: Config, registry: Any) -> int:
    from llmos.kernel.devices import Permission
    from llmos.kernel.grants import GrantStore, grants_path

    known = {d.name: d for d in registry.devices()}
    if args.device not in known:
        return _error(f"no device {args.device!r} (known: {', '.join(sorted(known)) or 'none'})")
    valid = [p.value for p in Permission]
    for name in args.permissions:
        if name not in valid:
            return _error(f"unknown permission {name!r} (one of: {', '.join(valid)})")
    store = GrantStore(grants_path(config.resolved_data_dir()))
    try:
        if args.devices_command == "grant":
            held = store.grant(args.device, args.permissions)
        else:
            held = store.revoke(args.device, args.permissions or None)
    except OSError as exc:
        return _error(f"cannot write {store.path}: {exc}")
    print(f"{args.device}: granted {', '.join(sorted(p.value for p in held)) or 'nothing'}")
    return EXIT_OK


def _devices_approve(args: argparse.Namespace, config: Config) -> int:
    """Pin what the server showed when the registry was just built (its tools as they are now)."""
    from llmos.plugins.mcp.pins import DamagedPins, PinStore, pins_path

    store = PinStore(pins_path(config.resolved_data_dir()))
    try:
        approved = store.approve(args.device)
    except KeyError:
        return _error(f"no MCP server {args.device!r} has been seen (known: {', '.join(sorted(store.servers())) or 'none'})")
    except (DamagedPins, OSError) as exc:
        return _error(f"cannot approve {args.device!r}: {exc}")
    print(f"{args.device}: approved {', '.join(approved) if approved else 'nothing (no tool had changed)'}")
    return EXIT_OK


# --- ask and chat ---------------------------------------------------------------------------


class _Printer:
    """Streams tokens and system calls of one process to the terminal."""

    def __init__(self, pid_filter: list[int]) -> None:
        self.pids = pid_filter
        self.color = sys.stdout.isatty()

    def _dim(self, text: str) -> str:
        return f"\033[2m{text}\033[0m" if self.color else text

    def __call__(self, event: events.Event) -> None:
        pid = getattr(event, "pid", None)
        if pid not in self.pids:
            return
        if isinstance(event, events.Token):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, events.SyscallStarted):
            args = json.dumps(event.arguments, ensure_ascii=False)
            sys.stdout.write(self._dim(f"[syscall] {event.device}.{event.call} {args}") + "\n")
        elif isinstance(event, events.SyscallFinished):
            outcome = json.dumps(event.result, ensure_ascii=False) if event.ok else f"error: {event.error}"
            if len(outcome) > 200:
                outcome = outcome[:200] + "..."
            trust = "" if event.trusted else " (untrusted)"
            sys.stdout.write(self._dim(f"[result]  {outcome}{trust} in {event.seconds:.3f} s") + "\n")
        sys.stdout.flush()


def _tty_consent(request: Any) -> bool:
    """Ask on the terminal whether a side-effect call after untrusted content may run."""
    args = json.dumps(request.arguments, ensure_ascii=False)
    details = "".join(f"          {line}\n" for line in request.details())  # what would leave, to where
    print(f"\n[consent] {request.device}.{request.call} {args[:300]}\n"
          f"          {request.reason}.\n{details}          Allow this call? [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        return input().strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _tty_permission(device: str, permissions: list[Any], description: str) -> bool:
    """Ask on the terminal whether a device may have a permission (asked once; yes is remembered).

    Runs on the worker thread of the device call that needs it: only that process waits."""
    names = ", ".join(getattr(p, "value", str(p)) for p in permissions)
    print(f"\n[permission] Device {device!r} needs permission: {names}. Allow? [y/N] ",
          end="", file=sys.stderr, flush=True)
    try:
        return input().strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _start_kernel(config: Config, grant_all: bool) -> Any:
    from llmos.app.boot import build_kernel

    tty = sys.stdin.isatty()  # no way to ask: the answer is no (with a hint on how to grant)
    kernel = build_kernel(config, grant_all=grant_all, consent=_tty_consent if tty else None,
                          ask=_tty_permission if tty else None)
    kernel.start()
    try:
        kernel.wait_ready()
    except BaseException:  # the model did not load, or Ctrl-C: its devices (MCP servers) end too
        kernel.shutdown()
        raise
    return kernel


def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    from llmos.kernel.loop import TurnError

    kernel = _start_kernel(config, args.yes)
    try:
        pid = kernel.spawn("ask", Priority.CHAT)
        if not args.json:
            kernel.bus.subscribe(_Printer([pid]))
        try:
            result = kernel.submit(pid, args.text).result()
        except TurnError as exc:
            return _error(str(exc))
        if args.json:
            info = next(p for p in kernel.processes() if p["pid"] == pid)
            print(json.dumps({
                "answer": result.answer,
                "syscalls": result.syscalls,
                "process": info,
                "timings": result.timings,
            }, ensure_ascii=False))
        else:
            print()
        return EXIT_OK
    finally:
        kernel.shutdown()


def cmd_chat(args: argparse.Namespace, config: Config) -> int:
    from llmos.kernel.loop import TurnError

    resume = history_cli.resume(config, args.resume) if getattr(args, "resume", None) else {}
    print("llmos: loading the model ...", file=sys.stderr)
    kernel = _start_kernel(config, args.yes)
    try:
        pid = kernel.spawn("chat", Priority.CHAT, **resume)
        kernel.bus.subscribe(_Printer([pid]))
        print("llmos chat: type a message, Ctrl-D to quit, Ctrl-C to stop a reply.", file=sys.stderr)
        while True:
            try:
                line = input("\n> ")
            except EOFError:
                print()
                return EXIT_OK
            if not line.strip():
                continue
            future = kernel.submit(pid, line)
            try:
                future.result()
            except KeyboardInterrupt:
                kernel.stop(pid)
                future.result()
                print(" [stopped]")
            except TurnError as exc:
                print(f"\nllmos: {exc}", file=sys.stderr)
            print()
    finally:
        kernel.shutdown()


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or \
        os.environ.get("QT_QPA_PLATFORM", "") not in ("",)


def cmd_gui(args: argparse.Namespace, config: Config) -> int:
    try:
        from llmos.app.window import run_window
    except ImportError as exc:
        return _error(f"the desktop shell needs PySide6 ({exc}); run `make run` to install it")
    return run_window(config, grant_all=args.yes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "doctor":  # before the config loads: a broken one is among what it reports
            return doctor.run(args, lambda: _config(args))
        config = _config(args)
        if args.command == "ps":  # a client of a running server: no model here
            return ps_cli.run(args, config)
        supervisor.arm_crash_log(config.resolved_data_dir(), f"running `llmos {args.command or 'gui'}`")
        crash_hooks.reach("start")
        if config.backend == "llamacpp":  # before anything loads llama.cpp's libraries
            from llmos.kernel.backends import engine, model_path

            engine.prepare_process(model_path(config))
        if args.command == "devices":
            return cmd_devices(args, config)
        if args.command == "ask":
            return cmd_ask(args, config)
        if args.command == "memory":
            return memory_cli.run(args, config)
        if args.command in ("conversations", "export"):
            return history_cli.run(args, config)
        if args.command == "chat":
            return cmd_chat(args, config)
        if args.command == "serve":
            return serve_cli.run(args, config)
        if args.command == "voice":
            return voice_cli.run(args, config, _start_kernel)
        if args.command == "gui" or (args.command is None and _has_display()):
            return cmd_gui(args, config)
        if args.command is None:
            print("llmos: no display found; starting the terminal chat (`llmos gui` needs one)", file=sys.stderr)
            return cmd_chat(args, config)
    except (ConfigError, BackendError, history_cli.JournalError) as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
