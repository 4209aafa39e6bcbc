"""Dispatching system calls to devices: validate, check permissions, run off the kernel thread.

Every outcome is a :class:`SyscallResult` value. A device that raises, hangs, returns garbage or
returns too much gives an error (or a truncated) result; nothing here raises into the kernel.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from ..devices import Call, Device, DeviceError, Permission, Untrusted
from ..grants import GrantStore
from ..registry import DeviceRegistry, UnknownCall

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 8_000
CONSENT_TIMEOUT_S = 120.0  # how long a call may wait for the user's answer before its own deadline


@dataclass
class SyscallResult:
    device: str
    call: str
    arguments: dict[str, Any]
    ok: bool
    value: Any = None
    error: str | None = None
    trusted: bool = True
    source: str = ""
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.device}.{self.call}" if self.call else self.device

    def text(self) -> str:
        """The result as text for the model (already size-limited)."""
        if not self.ok:
            return f"Error: {self.error}"
        value = self.value
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "call": self.call,
            "arguments": self.arguments,
            "result": self.value if self.ok else None,
            "error": self.error,
            "ok": self.ok,
            "trusted": self.trusted,
            "seconds": round(self.seconds, 4),
        }


# Asked the first time a device needs permissions it lacks: (device, permissions, description) -> yes?
AskPermission = Callable[[str, list[Permission], str], bool]


class GrantPolicy:
    """Which permissions the user has granted to which device.

    A permission is granted when it is in ``granted`` (the config's ``grants``: every device),
    in the ``store`` for that device (remembered answers, ``llmos devices grant``), or when
    ``grant_all`` (``--yes``, one run). Otherwise, if ``ask`` is set, the user is asked once per
    device per run: yes is remembered in the store, no is refused for this run only.

    ``ask(device, permissions, description) -> bool`` runs where :meth:`Dispatcher.prepare` runs,
    i.e. on the kernel thread: an interactive prompt blocks the kernel (every process) until the
    user answers. Acceptable for the terminal (one user); a desktop dialog must not block forever.
    """

    def __init__(self, granted: Iterable[str] = (), grant_all: bool = False, *,
                 store: "GrantStore | None" = None,
                 ask: AskPermission | None = None) -> None:
        self.granted = {Permission(p) for p in granted}
        self.grant_all = grant_all
        self.store = store
        self.ask = ask
        self._answers: dict[str, bool] = {}  # device -> the user's answer this run
        self._lock = threading.Lock()

    def _stored(self, name: str) -> set[Permission]:
        if self.store is None:
            return set()
        try:
            return self.store.granted(name)
        except Exception:  # never let the store break a call: nothing remembered
            log.exception("reading the grants store failed")
            return set()

    def missing(self, device: Device) -> list[Permission]:
        if self.grant_all:
            return []
        held = self.granted | self._stored(device.name)
        missing = [p for p in device.permissions if p not in held]
        if not missing or self.ask is None:
            return missing
        with self._lock:  # ask once per device per run
            answer = self._answers.get(device.name)
            if answer is None:
                try:
                    answer = bool(self.ask(device.name, missing, device.description))
                except Exception:
                    log.exception("asking for a permission failed")
                    answer = False
                self._answers[device.name] = answer
                log.warning("permission %s for device %r: %s", ", ".join(p.value for p in missing),
                            device.name, "granted by the user" if answer else "refused by the user")
                if answer and self.store is not None:
                    try:
                        self.store.grant(device.name, missing)
                    except Exception:
                        log.exception("remembering the grant failed (granted for this run only)")
        return [] if answer else missing

    def forget(self, device: str) -> None:
        """Drop this run's remembered answer for ``device`` (after a revoke, ask again)."""
        with self._lock:
            self._answers.pop(device, None)

    def held(self, device: Device) -> set[Permission]:
        """What ``device`` holds now without asking (config, remembered grants, --yes)."""
        if self.grant_all:
            return set(device.permissions)
        return (self.granted | self._stored(device.name)) & set(device.permissions)

    @staticmethod
    def refusal(device: Device, missing: list[Permission]) -> str:
        names = ", ".join(p.value for p in missing)
        hint = " ".join(p.value for p in missing)
        return (f"permission denied: device {device.name!r} needs {names}, which the user has not granted "
                f"(grant it with `llmos devices grant {device.name} {hint}`, or `--yes` for one run)")


def _normalise(value: Any) -> Any:
    """Device results must be JSON-like; anything else is refused as garbage."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DeviceError(f"device returned a non-finite number ({value})")
        return value
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    raise DeviceError(f"device returned a {type(value).__name__}, which is not plain data")


def _limit(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) <= MAX_RESULT_CHARS:
        return value
    return text[:MAX_RESULT_CHARS] + f"\n[... truncated: the result had {len(text):,} characters]"


@dataclass(frozen=True)
class ConsentRequest:
    """A side-effect call from a process that has read untrusted content: the user must agree."""

    device: str
    call: str
    arguments: dict[str, Any]
    reason: str


# Asked on the device's worker thread (never the kernel's); True = the user agreed to this call.
Consent = Callable[[ConsentRequest], bool]


@dataclass
class Dispatcher:
    """Runs device calls on daemon worker threads, each with a deadline."""

    registry: DeviceRegistry
    policy: GrantPolicy = field(default_factory=GrantPolicy)
    consent: Consent | None = None

    def prepare(self, qualified: str, arguments: Any) -> tuple[Device, Call, dict[str, Any]] | SyscallResult:
        """Resolve and validate a call; an error result when it cannot run."""
        device_name, _, call_name = qualified.partition(".")
        try:
            device, call = self.registry.resolve(qualified)
        except UnknownCall as exc:
            known = ", ".join(name for name, _ in self.registry.calls())
            return SyscallResult(device_name, call_name, {}, ok=False, error=f"{exc}. Known calls: {known}")
        if not isinstance(arguments, dict):
            return SyscallResult(device.name, call.name, {}, ok=False,
                                 error=f"arguments must be a JSON object, got {type(arguments).__name__}")
        try:
            jsonschema.validate(arguments, call.parameters)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
            return SyscallResult(device.name, call.name, arguments, ok=False,
                                 error=f"invalid arguments for {device.name}.{call.name} ({where}): {exc.message}")
        missing = self.policy.missing(device)
        if missing:
            return SyscallResult(device.name, call.name, arguments, ok=False,
                                 error=self.policy.refusal(device, missing))
        return device, call, arguments

    def submit(self, qualified: str, arguments: Any, *, tainted: bool = False) -> "Future[SyscallResult]":
        """Start a call; the future always resolves to a SyscallResult (never raises).

        ``tainted``: the calling process has read untrusted content, so a call with side effects
        runs only if the user consents to it (with no way to ask, the answer is no).
        """
        future: Future[SyscallResult] = Future()
        prepared = self.prepare(qualified, arguments)
        if isinstance(prepared, SyscallResult):
            future.set_result(prepared)
            return future
        device, call, args = prepared
        future.deadline = time.monotonic() + call.timeout_s  # type: ignore[attr-defined]
        future.timeout_result = SyscallResult(  # type: ignore[attr-defined]
            device.name, call.name, args, ok=False,
            error=f"{device.name}.{call.name} did not answer within {call.timeout_s:g} s",
            seconds=call.timeout_s,
        )
        needs_consent = tainted and device.has_side_effects(call)
        if needs_consent:
            future.deadline += CONSENT_TIMEOUT_S  # type: ignore[attr-defined]
        worker = threading.Thread(
            target=self._run, args=(device, call, args, future, needs_consent),
            name=f"device-{device.name}.{call.name}", daemon=True,
        )
        worker.start()
        return future

    def call_blocking(self, qualified: str, arguments: Any, *, tainted: bool = False) -> SyscallResult:
        """Call and wait (for `llmos devices call` and tests): same checks, same timeout."""
        future = self.submit(qualified, arguments, tainted=tainted)
        deadline = getattr(future, "deadline", None)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            return future.timeout_result  # type: ignore[attr-defined]

    def _consented(self, device: Device, call: Call, args: dict[str, Any]) -> bool:
        request = ConsentRequest(device.name, call.name, args,
                                 "this conversation has read untrusted content (a web page, a file or a server)")
        try:
            agreed = bool(self.consent(request)) if self.consent is not None else False
        except Exception:
            log.exception("asking for consent failed")
            agreed = False
        log.warning("side-effect call %s.%s after untrusted content: %s", device.name, call.name,
                    "allowed by the user" if agreed else "refused")
        return agreed

    def _run(self, device: Device, call: Call, args: dict[str, Any], future: Future[SyscallResult],
             needs_consent: bool = False) -> None:
        start = time.monotonic()
        result = SyscallResult(device.name, call.name, args, ok=True)
        if needs_consent and not self._consented(device, call, args):
            result.ok = False
            result.error = (f"consent refused: {device.name}.{call.name} acts on the world and this "
                            "conversation has read untrusted content; the user did not allow this call")
            if not future.done():
                future.set_result(result)
            return
        if needs_consent:
            future.deadline = time.monotonic() + call.timeout_s  # type: ignore[attr-defined]
            start = time.monotonic()
        try:
            value = call.function(**args)
            if isinstance(value, Untrusted):
                result.trusted = False
                result.source = value.source
                value = value.value
            result.value = _limit(_normalise(value))
        except DeviceError as exc:
            result.ok, result.error = False, str(exc) or type(exc).__name__
        except Exception as exc:  # a device bug is an error value, and a log line
            log.warning("device %s.%s raised %s: %s", device.name, call.name, type(exc).__name__, exc)
            result.ok, result.error = False, f"{device.name}.{call.name} failed: {type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - start
        if not future.done():
            future.set_result(result)
