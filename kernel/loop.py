"""The kernel: one thread that runs the model for a table of processes.

Design principles (after curio's kernel):

- One entry into the kernel: requests (spawn, submit, stop, kill) are small dataclasses put on a
  queue from any thread; only the kernel thread touches the process table.
- The loop reads top to bottom in phases: take requests, take device completions, pick a process,
  run one slice of it, handle what it yielded.
- A process's failure is stored on the process and reported as an event; only a kernel bug is
  fatal. Devices run on their own executors, never on the kernel's thread.
- Everything observable is an event on ``kernel.bus``; the kernel never calls the UI.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
import threading
import time
from concurrent.futures import Future
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import events
from .backends.base import Backend, BackendError, SwitchInfo
from .process import Message, Priority, Process, ProcessState, ProcessTable, Turn, TurnResult, WaitFor, Yield
from .paging import Pager, RamReport
from .registry import DeviceRegistry
from .scheduler import Scheduler
from .syscalls.decide import warm
from .syscalls.dispatch import Consent, Dispatcher, GrantPolicy
from .turn import TurnOptions, TurnServices, boot_messages, make_calibration, ram_report, run_turn

log = logging.getLogger(__name__)


class TurnError(Exception):
    """A turn that failed; the process and the kernel go on."""


# --- requests: the one way into the kernel ----------------------------------------------------


@dataclass
class _Spawn:
    name: str
    priority: Priority
    history: list[Message] = field(default_factory=list)
    conversation: str | None = None
    future: "Future[int]" = field(default_factory=Future)


@dataclass
class _Submit:
    pid: int
    turn: Turn


@dataclass
class _Stop:
    pid: int


@dataclass
class _Kill:
    pid: int
    reap: bool = False


@dataclass
class _Renice:
    pid: int
    priority: Priority


class _DeviceAnswered:
    """Posted by a device call's done-callback: the loop wakes at once instead of polling."""


@dataclass
class _InspectRam:
    pid: int
    future: "Future[RamReport]" = field(default_factory=Future)


class Kernel:
    def __init__(
        self,
        backend: Backend,
        registry: DeviceRegistry,
        options: TurnOptions | None = None,
        policy: GrantPolicy | None = None,
        consent: Consent | None = None,
        calibration_store: Path | None = None,
        pager: Pager | None = None,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.options = options or TurnOptions()
        self.bus = events.EventBus()
        self.dispatcher = Dispatcher(registry, policy or GrantPolicy(), consent)
        self.scheduler = Scheduler(self.options.slice_tokens)
        self.table = ProcessTable()
        self._requests: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._running: Process | None = None
        self._boot = boot_messages(registry)
        self._calibration_store = calibration_store
        self._svc = TurnServices(backend, registry, self.dispatcher, self.bus.emit, self.options,
                                 make_calibration(registry, calibration_store), pager)
        self.load_error: str | None = None
        backend.on_switch = self._on_switch

    # --- public API (any thread) ----------------------------------------------------------

    def start(self) -> "Kernel":
        """Start the devices (when the registry was prepared, not started) and the kernel thread."""
        self.registry.start()
        self._thread = threading.Thread(target=self._main, name="llmos-kernel", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raises BackendError if it could not be."""
        if not self._ready.wait(timeout):
            raise TimeoutError("the model did not load in time")
        if self.load_error is not None:
            raise BackendError(self.load_error)

    def shutdown(self, timeout: float | None = None, *, close_backend: bool = True) -> None:
        """Stop the loop; ``close_backend=False`` leaves the model loaded for another kernel.

        Waits for the kernel thread to leave the model (at most one slice, or the load): a model
        still in use by a lingering thread must never be closed or shared. Then the device calls
        still running are cancelled and the devices torn down (``DeviceRegistry.stop``: MCP
        server processes end, stores close).
        """
        self._stopping.set()
        self._requests.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the kernel thread is still busy with the model; waiting for it")
                self._thread.join()
        self._fail_pending_requests()
        self.dispatcher.close()
        self.registry.stop()
        for proc in self.table:
            self.backend.release(proc.pid)
        if close_backend:
            self.backend.close()

    def _fail_pending_requests(self) -> None:
        """After the loop ended: a caller still waiting on a request (a RAM report, a spawn)
        hears that the kernel is gone instead of waiting for its timeout."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            future = getattr(request, "future", None)
            if future is not None and not future.done():
                future.set_exception(RuntimeError("the kernel has shut down"))

    def spawn(self, name: str = "chat", priority: Priority = Priority.CHAT,
              history: list[Message] | None = None, conversation: str | None = None) -> int:
        """A new process. ``history`` (earlier user/assistant/tool messages) and ``conversation``
        (its journal id) resume a conversation."""
        request = _Spawn(name, priority, list(history or []), conversation)
        self._requests.put(request)
        while True:  # the kernel answers once the model has loaded; a dead kernel never will
            try:
                return request.future.result(timeout=1.0)
            except TimeoutError:
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError("the kernel is not running") from None

    def submit(self, pid: int, text: str, program: Any = None) -> "Future[TurnResult]":
        """The next turn of ``pid``: the OS's own turn on ``text``, or ``program(services,
        process)``'s task (a generator like ``turn.run_turn``'s, returning a TurnResult)."""
        turn = Turn(text, program=program)
        self._requests.put(_Submit(pid, turn))
        self._hint_preempt(self._lookup(pid))
        return turn.future

    def ask(self, text: str, priority: Priority = Priority.CHAT, name: str = "ask") -> "Future[TurnResult]":
        return self.submit(self.spawn(name, priority), text)

    def stop(self, pid: int) -> None:
        """Interrupt the current turn of ``pid`` at once (its partial answer is kept)."""
        self._requests.put(_Stop(pid))
        self._flag_stop(pid)

    def kill(self, pid: int, reap: bool = False) -> None:
        """End ``pid`` (its running turn stops at its next token); ``reap`` also removes it from
        the process table once it has ended (one finished API request is not kept)."""
        self._requests.put(_Kill(pid, reap))
        self._flag_stop(pid)

    def _flag_stop(self, pid: int) -> None:
        # The request is taken between slices; a slice of a slow model can take many seconds.
        # The running turn checks this flag after every token, so set it now too (one bool
        # store, atomic; the queued request still does the bookkeeping).
        proc = self._lookup(pid)
        if proc is not None and proc.task is not None:
            proc.stop_requested = True

    def _hint_preempt(self, proc: Process | None) -> None:
        # ``proc`` is about to be ready: if it outranks the process generating now, that one
        # ends its slice at the next token (a chat or voice turn does not wait out an API or
        # background slice). A hint read across threads (one bool store); a stale read costs
        # at most an early slice boundary or the rest of the slice.
        running = self._running
        if proc is not None and running is not None and running is not proc and proc.priority > running.priority:
            running.yield_requested = True

    def set_priority(self, pid: int, priority: Priority) -> None:
        """Move ``pid`` to another scheduling level from its next slice on (voice mode gives a
        chat process the voice level while it listens, and gives it back after)."""
        self._requests.put(_Renice(pid, priority))

    def processes(self) -> list[dict[str, Any]]:
        return [p.info() for p in self.table]

    def ram(self, pid: int, timeout: float | None = 30.0) -> RamReport:
        """A snapshot of a process's context window (pages, tokens, what was paged and why).

        Answered on the kernel thread between two slices, so it may wait for one slice; call it
        off the GUI thread. Raises LookupError for an unknown process."""
        if self._stopping.is_set():
            raise RuntimeError("the kernel has shut down")
        request = _InspectRam(pid)
        self._requests.put(request)
        return request.future.result(timeout)

    # --- the loop (kernel thread) ---------------------------------------------------------

    def _main(self) -> None:
        self._load()
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # a kernel bug: log it, fail the process in hand, keep serving
                log.exception("kernel loop error")
                if self._running is not None:
                    self._fail_turn(self._running, "internal kernel error (see the log)")

    def _load(self) -> None:
        self.bus.emit(events.BackendLoading(self.backend.name, self.backend.model))
        started = time.monotonic()
        try:
            self.backend.load()
        except BackendError as exc:
            self.load_error = str(exc)
            self.bus.emit(events.BackendFailed(self.backend.name, self.backend.model, str(exc)))
        else:
            self._verify_grammars()
            if self.backend.supports_scoring and self._svc.calibration is not None:
                # the decision baseline, once, so the first turn does not pay for it
                names = [name for name, _ in self.registry.calls()]
                try:
                    warm(self._svc.calibration, self.backend, names)
                except BackendError as exc:  # the first turn will try again, and fail visibly
                    log.warning("decision calibration failed: %s", exc)
            self.bus.emit(events.BackendReady(self.backend.name, self.backend.model, time.monotonic() - started))
        self._ready.set()

    def _verify_grammars(self) -> None:
        """Every call's grammar compiled once in the engine itself, before the kernel is ready:
        a call it refuses leaves the prompt (the calibration follows); the others go on."""
        compile_grammar = getattr(self.backend, "compile_grammar", None)
        if compile_grammar is None or not self.registry.verify_grammars(compile_grammar):
            return
        self._boot = boot_messages(self.registry)
        if self._svc.calibration is not None:
            self._svc.calibration = make_calibration(self.registry, self._calibration_store)

    def _step(self) -> None:
        # Phase 1: take requests; block only when there is nothing to run.
        busy = self._running is not None or self.table.in_state(ProcessState.READY)
        # A device call's completion (at its deadline at the latest: the dispatcher's watchdog)
        # and a stop both arrive as requests, so a kernel whose processes all wait just blocks.
        self._take_requests(block=not busy, timeout=0.5)
        # Phase 2: device completions, deadlines and stops wake WAITING processes.
        self._collect_completions()
        # Phase 3: pick who runs: the running process keeps the model unless someone preempts it.
        proc = self._running
        if proc is None or proc.state is not ProcessState.RUNNING or self.scheduler.should_preempt(proc, self._procs()):
            if proc is not None and proc.state is ProcessState.RUNNING:
                self._set_state(proc, ProcessState.READY, "preempted")
                self.scheduler.make_ready(proc)
            proc = self.scheduler.pick(self._procs())
            if proc is not None:
                proc.yield_requested = False  # before it is published: a hint from now on counts
            self._running = proc
            if proc is None:
                return
            self._set_state(proc, ProcessState.RUNNING, "scheduled")
        # Phase 4: run one slice of its task, and handle what it yields.
        self._run_slice(proc)

    def _procs(self) -> dict[int, Process]:
        return {p.pid: p for p in self.table}

    def _take_requests(self, block: bool, timeout: float) -> None:
        try:
            request = self._requests.get(block=block, timeout=timeout if block else None)
        except queue.Empty:
            return
        while request is not None:
            self._handle(request)
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return

    def _handle(self, request: Any) -> None:
        self._HANDLERS[type(request)](self, request)

    def _on_spawn(self, request: _Spawn) -> None:
        proc = self.table.spawn(request.name, request.priority, [*self._boot, *request.history],
                                request.conversation)
        proc.pinned = len(self._boot)
        # a resumed conversation that read untrusted content is as tainted as before the restart
        proc.tainted = any(not m.trusted for m in request.history)
        self.bus.emit(events.ProcessCreated(proc.pid, proc.name, proc.priority.name.lower(),
                                            proc.conversation, resumed=request.conversation is not None))
        self._set_state(proc, ProcessState.IDLE, "spawned")
        self._snapshot_ram(proc)
        request.future.set_result(proc.pid)

    def _on_submit(self, request: _Submit) -> None:
        try:
            proc = self.table.get(request.pid)
        except LookupError as exc:
            request.turn.future.set_exception(TurnError(str(exc)))
            return
        if proc.state is ProcessState.DONE and proc.task is None:
            request.turn.future.set_exception(TurnError(f"process {proc.pid} has ended"))
            return
        if self.load_error is not None:
            request.turn.future.set_exception(TurnError(f"the model is not available: {self.load_error}"))
            return
        proc.turns.append(request.turn)
        self._start_next_turn(proc)

    def _on_device_answered(self, request: _DeviceAnswered) -> None:
        pass  # it woke the loop; phase 2 of this step collects the answer

    def _on_stop(self, request: _Stop) -> None:
        proc = self._lookup(request.pid)
        if proc is not None and proc.task is not None:
            proc.stop_requested = True

    def _on_renice(self, request: _Renice) -> None:
        proc = self._lookup(request.pid)
        if proc is not None and proc.priority is not request.priority:
            old, proc.priority = proc.priority, request.priority
            self.bus.emit(events.PriorityChanged(proc.pid, old.name.lower(), request.priority.name.lower()))

    def _on_kill(self, request: _Kill) -> None:
        proc = self._lookup(request.pid)
        if proc is None:
            return
        proc.stop_requested = True
        proc.reap = proc.reap or request.reap
        for turn in proc.turns[1:]:
            turn.future.set_exception(TurnError(f"process {proc.pid} was killed"))
        del proc.turns[1:]
        if proc.task is None:
            self._end(proc)
        else:
            proc.kill_requested = True  # the task ends at its next step; then the process

    def _on_inspect_ram(self, request: _InspectRam) -> None:
        proc = self._lookup(request.pid)
        if proc is None:
            request.future.set_exception(LookupError(f"no process {request.pid}"))
            return
        try:
            request.future.set_result(ram_report(self._svc, proc))
        except Exception as exc:  # a backend that cannot tokenize now: the caller hears why
            request.future.set_exception(exc)

    # one handler per request type, run on the kernel thread (``_take_requests``)
    _HANDLERS: dict[type, Callable[["Kernel", Any], None]] = {
        _Spawn: _on_spawn, _Submit: _on_submit, _DeviceAnswered: _on_device_answered, _Stop: _on_stop,
        _Renice: _on_renice, _Kill: _on_kill, _InspectRam: _on_inspect_ram,
    }

    def _lookup(self, pid: int) -> Process | None:
        try:
            return self.table.get(pid)
        except LookupError:
            return None

    def _start_next_turn(self, proc: Process) -> None:
        if proc.task is not None or not proc.turns:
            return
        proc.stop_requested = False
        turn = proc.turns[0]
        if turn.program is not None:
            proc.task = turn.program(self._svc, proc)
        else:
            proc.task = run_turn(self._svc, proc, turn.text)
        self._set_state(proc, ProcessState.READY, "new turn")
        self.scheduler.make_ready(proc)

    def _collect_completions(self) -> None:
        # a device call's future answers at its deadline at the latest (the dispatcher's watchdog)
        for proc in self.table.in_state(ProcessState.WAITING):
            wait = proc.waiting_on
            if wait is None:
                continue
            if wait.future.done():
                proc.resume_value = wait.future.result()
            elif proc.stop_requested:
                self.dispatcher.cancel(wait.future)  # its cancel event is set: no late side effect
                proc.resume_value = None
            else:
                continue
            proc.waiting_on = None
            self._set_state(proc, ProcessState.READY, "device answered")
            self.scheduler.make_ready(proc)

    def _run_slice(self, proc: Process) -> None:
        assert proc.task is not None
        value, proc.resume_value = proc.resume_value, None
        try:
            yielded = proc.task.send(value)
        except StopIteration as stop:
            self._finish_turn(proc, stop.value)
            return
        except BackendError as exc:
            self._fail_turn(proc, str(exc))
            return
        except Exception as exc:
            log.exception("process %d failed", proc.pid)
            self._fail_turn(proc, f"{type(exc).__name__}: {exc}")
            return
        if isinstance(yielded, WaitFor):
            proc.waiting_on = yielded
            self._set_state(proc, ProcessState.WAITING, "system call")
            self._running = None
            # runs on the device's thread (or here, if it has already answered)
            yielded.future.add_done_callback(lambda _future: self._device_answered(proc))
        elif yielded is not Yield.SLICE:
            self._fail_turn(proc, f"task yielded {yielded!r}")

    def _device_answered(self, proc: Process) -> None:
        # on the device's thread: wake the loop, and let an outranking process back in soon
        self._requests.put(_DeviceAnswered())
        self._hint_preempt(proc)

    def _finish_turn(self, proc: Process, result: TurnResult) -> None:
        turn = proc.turns.pop(0)
        proc.task = None
        self._running = None
        self.bus.emit(events.TurnFinished(proc.pid, result.answer, result.stopped, result.timings))
        self._snapshot_ram(proc)
        # the process is idle (or ended) before its caller hears the result
        killed = proc.kill_requested
        if killed:
            self._end(proc)
        else:
            self._set_state(proc, ProcessState.IDLE, "turn finished")
        turn.future.set_result(result)
        if not killed:
            self._start_next_turn(proc)

    def _fail_turn(self, proc: Process, error: str) -> None:
        proc.task = None
        proc.error = error
        self._running = None
        self.bus.emit(events.ProcessFailed(proc.pid, error))
        self._snapshot_ram(proc)
        failed = proc.turns.pop(0) if proc.turns else None
        self._set_state(proc, ProcessState.IDLE, "turn failed")
        if failed is not None:
            failed.future.set_exception(TurnError(error))
        self._start_next_turn(proc)

    def _snapshot_ram(self, proc: Process) -> None:
        """Tell the observers (the journal) what the process's context window holds now."""
        try:
            report = ram_report(self._svc, proc)
        except Exception as exc:  # a backend that cannot tokenize now: the snapshot is skipped
            log.warning("process %d: no RAM snapshot: %s", proc.pid, exc)
            return
        self.bus.emit(events.RamSnapshot(proc.pid, report))

    def _end(self, proc: Process) -> None:
        proc.task = None
        self.scheduler.forget(proc)
        self.backend.release(proc.pid)
        if self._running is proc:
            self._running = None
        if proc.reap:  # gone from the table before anyone hears it ended
            self.table.remove(proc.pid)
        self._set_state(proc, ProcessState.DONE, "killed")

    def _set_state(self, proc: Process, new: ProcessState, reason: str) -> None:
        if proc.state is new:
            return
        old, proc.state = proc.state, new
        self.bus.emit(events.ProcessStateChanged(proc.pid, old, new, reason))

    def _on_switch(self, info: SwitchInfo) -> None:
        self.bus.emit(events.ContextSwitched(
            info.pid, info.previous, info.method, info.reused_tokens, info.evaluated_tokens, info.seconds,
        ))
