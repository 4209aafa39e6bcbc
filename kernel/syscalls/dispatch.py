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
from contextvars import Context
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import jsonschema

from ..call_context import CallContext, enter_call
from ..devices import Call, Caller, Device, DeviceError, Permission, Untrusted
from ..flow import Leak, Provenance, describe_leaks, leaks, typed_destinations
from ..grants import GrantStore
from ..registry import DeviceRegistry, UnknownCall
from .executor import DeviceExecutor, Watchdog

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 8_000
ERROR_PREFIX = "Error: "  # how a failed call's result page begins
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
    # the call's arguments were refused (invalid, or the device's own refusal): the same call
    # with other arguments may succeed, so the kernel lets the model try again (kernel/turn.py)
    correctable: bool = False
    # the network destinations (host:port) the call was allowed to reach and started on, for the
    # caller to add to its process's set (the kernel does it on its own thread: kernel/turn.py)
    contacted: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.device}.{self.call}" if self.call else self.device

    def text(self) -> str:
        """The result as text for the model (already size-limited)."""
        if not self.ok:
            return f"{ERROR_PREFIX}{self.error}"
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
    device per run (:meth:`obtain`): yes is remembered in the store, no is refused for this run.

    :meth:`missing` never asks. :meth:`obtain` may wait for the user; the dispatcher calls it on
    the device's worker thread, never on the kernel thread, so a prompt (a terminal question, a
    desktop dialog) holds up only the process that made the call.
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

    @property
    def can_ask(self) -> bool:
        return self.ask is not None

    def missing(self, device: Device) -> list[Permission]:
        """The permissions ``device`` needs and does not hold now (asks nobody)."""
        if self.grant_all or self._answers.get(device.name) is True:
            return []
        held = self.granted | self._stored(device.name)
        return [p for p in device.permissions if p not in held]

    def refused_this_run(self, device: Device) -> bool:
        return self._answers.get(device.name) is False

    def obtain(self, device: Device) -> list[Permission]:
        """What is still missing after asking the user (once per device per run); may block."""
        missing = self.missing(device)
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


class ConsentKind(Enum):
    """Why a call from a process that has read untrusted content needs the user's consent."""

    SIDE_EFFECT = "side effect"  # it writes, runs, speaks or otherwise acts on the world
    NEW_DESTINATION = "new destination"  # it contacts a place this process has not contacted
    DATA_FLOW = "data leaves"  # it would send words the untrusted content did not contain (kernel/flow.py)


@dataclass(frozen=True)
class ConsentRequest:
    """A call from a process that has read untrusted content, which the user must agree to."""

    device: str
    call: str
    arguments: dict[str, Any]
    reason: str
    kinds: tuple[ConsentKind, ...] = (ConsentKind.SIDE_EFFECT,)
    destinations: tuple[str, ...] = ()  # the new places it would contact ("host:port")
    leaving: tuple[Leak, ...] = ()  # what data would leave (DATA_FLOW)
    to: tuple[str, ...] = ()  # every place the call would contact ("host:port"); empty = unknown

    def details(self) -> list[str]:
        """What a person needs to decide, one line each: what would leave, and to where."""
        lines = []
        if self.leaving:
            lines.append(f"data that would leave: {describe_leaks(list(self.leaving))}")
        if ConsentKind.DATA_FLOW in self.kinds or ConsentKind.NEW_DESTINATION in self.kinds:
            lines.append(f"to: {', '.join(self.to) if self.to else 'a place llmos cannot tell'}")
        return lines


# Asked on the device's worker thread (never the kernel's); True = the user agreed to this call.
Consent = Callable[[ConsentRequest], bool]

_TAINT = "this conversation has read untrusted content (a web page, a file or a server)"


@dataclass(frozen=True)
class _Plan:
    """A validated call and what must happen before it runs (on its worker thread)."""

    device: Device
    call: Call
    arguments: dict[str, Any]
    missing: tuple[Permission, ...] = ()  # to ask the user for first
    consent: ConsentRequest | None = None  # then this consent
    destinations: tuple[str, ...] = ()  # to remember as contacted once allowed
    caller: Caller = Caller()  # what the device may know about the process calling it


@dataclass
class Dispatcher:
    """Runs device calls on a bounded executor per device (:mod:`.executor`), each with a
    deadline: past it the call is cancelled (its :class:`CallContext`'s cancel event is set) and
    the model told it failed; whatever the call does after that is dropped, and a side effect it
    had not committed (``context.commit()``) never happens.

    Everything that may wait for the user (a permission prompt, a consent question) happens on
    the call's worker thread, one question at a time; the kernel thread never waits for a person.
    """

    registry: DeviceRegistry
    policy: GrantPolicy = field(default_factory=GrantPolicy)
    consent: Consent | None = None
    _prompt_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _executors: dict[str, DeviceExecutor] = field(default_factory=dict, init=False, repr=False)
    _watchdog: Watchdog = field(default_factory=Watchdog, init=False, repr=False)
    _live: set["_Pending"] = field(default_factory=set, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def prepare(self, qualified: str, arguments: Any, *, tainted: bool = False,
                contacted: set[str] | None = None, provenance: Provenance | None = None) -> _Plan | SyscallResult:
        """Resolve, validate and check a call (asks nobody); an error result when it cannot run."""
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
            return SyscallResult(device.name, call.name, arguments, ok=False, correctable=True,
                                 error=f"invalid arguments for {device.name}.{call.name} ({where}): {exc.message}")
        missing = self.policy.missing(device)
        if missing and (not self.policy.can_ask or self.policy.refused_this_run(device)):
            return SyscallResult(device.name, call.name, arguments, ok=False,
                                 error=self.policy.refusal(device, missing))
        destinations = (call.destinations_for(arguments, self.registry.instance(device.name).settings)
                        if Permission.NETWORK in device.permissions else [])
        request = (self._consent_needed(device, call, arguments, destinations, contacted, provenance)
                   if tainted else None)
        sources = provenance.untrusted_sources if provenance is not None else ()
        caller = Caller(tainted, sources or (("untrusted content",) if tainted else ()))
        return _Plan(device, call, arguments, tuple(missing), request, tuple(destinations or ()), caller)

    @staticmethod
    def _consent_needed(device: Device, call: Call, arguments: dict[str, Any], destinations: list[str] | None,
                        contacted: set[str] | None, provenance: Provenance | None = None) -> ConsentRequest | None:
        """For a tainted process: the consent question this call needs, or None."""
        kinds: list[ConsentKind] = []
        what: list[str] = []
        if device.has_side_effects(call):
            kinds.append(ConsentKind.SIDE_EFFECT)
            what.append("it acts on the world")
        new: tuple[str, ...] = ()
        leaving: list[Leak] = []
        if Permission.NETWORK in device.permissions:
            known = set(contacted or set())
            if provenance is not None:  # an address the user typed whole is the user's request
                known |= typed_destinations(arguments, provenance)
            new = tuple(d for d in destinations or [] if d not in known)
            if destinations is None or new:
                kinds.append(ConsentKind.NEW_DESTINATION)
                what.append(f"it contacts {', '.join(new)}, which this conversation has not contacted before"
                            if new else "it contacts the network, and llmos cannot tell where")
            if provenance is not None and destinations != []:  # [] = the call contacts nothing
                leaving = leaks(arguments, provenance)
                if leaving:
                    kinds.append(ConsentKind.DATA_FLOW)
                    where = ", ".join(destinations) if destinations else "the network"
                    what.append(f"it would send {describe_leaks(leaving)} to {where}")
        if not kinds:
            return None
        return ConsentRequest(device.name, call.name, arguments, f"{_TAINT}, and {' and '.join(what)}",
                              tuple(kinds), new, tuple(leaving), tuple(destinations or ()))

    def submit(self, qualified: str, arguments: Any, *, tainted: bool = False,
               contacted: set[str] | None = None, provenance: Provenance | None = None,
               pid: int | None = None, conversation: str | None = None) -> "Future[SyscallResult]":
        """Start a call on its device's executor; the future always resolves to a SyscallResult
        (never raises), at the latest at the call's deadline.

        ``tainted``: the calling process has read untrusted content, so a call with side effects,
        or one that contacts a place not in ``contacted`` (the process's set of ``host:port``
        destinations, read here; the result's ``contacted`` says what to add to it), runs only if
        the user consents to it; with no way to ask,
        the answer is no. ``provenance`` (the labelled conversation, :mod:`llmos.kernel.flow`)
        adds the flow rule: a network call whose arguments carry words the untrusted content did
        not contain needs consent too, even to a place already contacted. ``pid`` and
        ``conversation`` name the calling process in the call's :class:`CallContext`.
        """
        future: Future[SyscallResult] = Future()
        plan = self.prepare(qualified, arguments, tainted=tainted, contacted=contacted, provenance=provenance)
        if isinstance(plan, SyscallResult):
            future.set_result(plan)
            return future
        device, call = plan.device, plan.call
        instance = self.registry.instance(device.name)
        asking = plan.missing or plan.consent is not None  # time for the user to answer
        context = CallContext(pid=pid, conversation=conversation, data_dir=instance.data_dir,
                              settings=dict(instance.settings), state=instance.state, caller=plan.caller,
                              deadline=time.monotonic() + call.timeout_s + (CONSENT_TIMEOUT_S if asking else 0.0))
        pending = _Pending(plan, context, future)
        with self._lock:
            if self._closed:
                future.set_result(pending.failed("the OS is shutting down"))
                return future
            self._live.add(pending)
            executor = self._executors.get(device.name)
            if executor is None:
                executor = self._executors[device.name] = DeviceExecutor(device.name)
        future.add_done_callback(lambda _: self._forget(pending))
        self._watchdog.watch(context, pending.timed_out)
        executor.submit(lambda: Context().run(self._run, pending))
        return future

    def cancel(self, future: "Future[SyscallResult]", reason: str = "stopped by the user") -> None:
        """Cancel the call behind ``future`` (the user stopped the turn): its context's cancel
        event is set, side effects it has not committed never happen, the future answers now."""
        with self._lock:
            pending = next((c for c in self._live if c.future is future), None)
        if pending is not None:
            pending.cancel(reason)

    def close(self) -> None:
        """Cancel every call in flight (their futures answer) and stop the workers. Idempotent."""
        with self._lock:
            self._closed = True
            live, self._live = list(self._live), set()
            executors, self._executors = list(self._executors.values()), {}
        for pending in live:
            pending.cancel("the OS shut down")
        self._watchdog.close()
        for executor in executors:
            executor.close()

    def _forget(self, pending: "_Pending") -> None:
        with self._lock:
            self._live.discard(pending)

    def call_blocking(self, qualified: str, arguments: Any, *, tainted: bool = False,
                      contacted: set[str] | None = None, provenance: Provenance | None = None) -> SyscallResult:
        """Call and wait (for `llmos devices call` and tests): same checks, same timeout;
        ``contacted`` gets the destinations the call reached, on the caller's thread."""
        result = self.submit(qualified, arguments, tainted=tainted, contacted=contacted, provenance=provenance).result()
        if contacted is not None:
            contacted.update(result.contacted)
        return result

    def _consented(self, request: ConsentRequest) -> bool:
        try:
            agreed = bool(self.consent(request)) if self.consent is not None else False
        except Exception:
            log.exception("asking for consent failed")
            agreed = False
        log.warning("consent for %s.%s %s (%s: %s): %s", request.device, request.call,
                    json.dumps(request.arguments, ensure_ascii=False, default=str)[:300],
                    ", ".join(k.value for k in request.kinds), request.reason,
                    "allowed by the user" if agreed else "refused")
        return agreed

    def _ask_user(self, plan: _Plan, context: CallContext) -> str | None:
        """Permission, then consent, on this worker thread; the refusal, or None to go on."""
        with self._prompt_lock:  # one question on the screen at a time
            if context.cancelled:  # it timed out (or was stopped) behind another question: ask nothing
                return None
            if plan.missing:
                missing = self.policy.obtain(plan.device)
                if missing:
                    return self.policy.refusal(plan.device, missing)
            if plan.consent is not None and not self._consented(plan.consent):
                return (f"consent refused: {plan.device.name}.{plan.call.name} needs the user's consent "
                        f"because {plan.consent.reason}; the user did not allow this call")
        return None

    def _run(self, pending: "_Pending") -> None:
        """On the device's worker thread (in a fresh contextvars context): ask, then call."""
        plan, context = pending.plan, pending.context
        device, call, args = plan.device, plan.call, plan.arguments
        if context.cancelled:  # it waited for a worker past its deadline, or was stopped: never run
            return
        if plan.missing or plan.consent is not None:
            refusal = self._ask_user(plan, context)
            if refusal is not None:
                pending.answer(pending.failed(refusal))
                return
            if context.cancelled:
                return  # the answer came after the call had timed out
            context.deadline = time.monotonic() + call.timeout_s  # earlier than the one watched:
            self._watchdog.watch(context, pending.timed_out)  # watched again (the old entry finds it done)
        pending.ran = True  # from here its destinations count as reached, whatever the answer
        if context.cancelled:  # the deadline passed just now: its answer had no destinations, so no call
            return
        result = SyscallResult(device.name, call.name, args, ok=True, contacted=plan.destinations)
        start = time.monotonic()
        enter_call(context)  # devices.current_call() and devices.caller() read it
        if call.context_parameter is not None:
            args = {**args, call.context_parameter: context}
        try:
            value = call.function(**args)
            if isinstance(value, Untrusted):
                result.trusted = False
                result.source = value.source
                value = value.value
            result.value = _limit(_normalise(value))
        except DeviceError as exc:
            result.ok, result.error, result.correctable = False, str(exc) or type(exc).__name__, True
        except Exception as exc:  # a device bug is an error value, and a log line
            log.warning("device %s.%s raised %s: %s", device.name, call.name, type(exc).__name__, exc)
            result.ok, result.error = False, f"{device.name}.{call.name} failed: {type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - start
        pending.answer(result)


# added to the error of a call cancelled inside its commit block (CallContext.committing)
_COMMITTING = " (it was cancelled while carrying out its action, which may have happened)"


@dataclass(eq=False)
class _Pending:
    """A call in flight: its plan, its context and the future the kernel waits on. Exactly one
    answer reaches the future: the device's, or the timeout's or the stop's (whichever is first)."""

    plan: _Plan
    context: CallContext
    future: "Future[SyscallResult]"
    started: float = field(default_factory=time.monotonic)
    ran: bool = False  # the device function was entered (a timeout after it may have reached its places)

    def failed(self, error: str, seconds: float = 0.0) -> SyscallResult:
        return SyscallResult(self.plan.device.name, self.plan.call.name, self.plan.arguments, ok=False,
                             error=error, seconds=seconds, contacted=self.plan.destinations if self.ran else ())

    def answer(self, result: SyscallResult) -> None:
        """The device's answer, dropped when the call was cancelled first."""
        if self.context.finish():
            self.future.set_result(result)
        else:  # cancelled by someone who did not answer for it (the device itself): say so
            self._resolve(self.failed(f"{self.plan.device.name}.{self.plan.call.name} was cancelled: "
                                      f"{self.context.reason}", seconds=time.monotonic() - self.started))

    def timed_out(self) -> None:
        """The watchdog cancelled the call at its deadline."""
        if self.future.done():
            return
        call = self.plan.call
        result = self.failed(f"{self.plan.device.name}.{call.name} did not answer within {call.timeout_s:g} s"
                             f"{_COMMITTING if self.context.committing else ''}", seconds=call.timeout_s)
        log.warning("%s (cancelled; its late answer is dropped)", result.error)
        self._resolve(result)

    def cancel(self, reason: str) -> None:
        if self.context.cancel(reason):
            self._resolve(self.failed(f"{self.plan.device.name}.{self.plan.call.name}: {reason}"
                                      f"{_COMMITTING if self.context.committing else ''}",
                                      seconds=time.monotonic() - self.started))

    def _resolve(self, result: SyscallResult) -> None:
        if not self.future.done():
            self.future.set_result(result)
