"""Devices as instances with a lifecycle, on the scripted backend: per-process and per-kernel state,
teardown when the registry stops, cancellation at a deadline or a stop, no late side effect."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import installed

from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.devices import CallContext, Cancelled, Device, DeviceContext
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import Dispatcher, GrantPolicy
from llmos.kernel.syscalls.executor import WORKERS_PER_DEVICE
from tests.mcp_processes import notes_server, running
from tests.plugins.pages import serve

PAGE = "<html><head><title>Foxes</title></head><body><article><p>The silver fox was seen by the river " \
       "in 1987, and the red fox every night since.</p></article></body></html>"


@pytest.fixture()
def page_url() -> Iterator[str]:
    with serve(lambda path: PAGE) as site:
        yield f"{site.url}/foxes"


def kernel_on(replies: list[str], tmp_path: Path, *extra: Device) -> Kernel:
    registry = DeviceRegistry.from_entry_points()
    for device in extra:
        registry.register(device)
    registry.start(tmp_path)
    kernel = Kernel(ScriptedBackend(replies), registry, policy=GrantPolicy(granted=["network"])).start()
    kernel.wait_ready(10)
    return kernel


def open_then_answer(url: str) -> list[str]:
    return [f'CALL browser.open {{"url": "{url}"}}', "ANSWER: It is open."]


FIND = ['CALL browser.find {"text": "fox"}', "ANSWER: Found."]


def syscall(kernel: Kernel, pid: int, text: str) -> dict:
    [call] = kernel.submit(pid, text).result(20).syscalls
    return call


def test_two_processes_never_see_each_others_open_page(tmp_path, page_url):
    kernel = kernel_on([*open_then_answer(page_url), *FIND, *FIND], tmp_path)
    try:
        a, b = kernel.spawn("chat"), kernel.spawn("voice")
        assert syscall(kernel, a, f"open {page_url}")["ok"]
        in_b = syscall(kernel, b, "find fox on the page")
        in_a = syscall(kernel, a, "find fox on the page")
    finally:
        kernel.shutdown()
    assert not in_b["ok"] and "no page is open" in in_b["error"]
    assert in_a["ok"] and in_a["result"]["count"] == 2 and in_a["result"]["url"] == page_url


def test_two_kernels_never_see_each_others_device_state(tmp_path, page_url):
    first = kernel_on(open_then_answer(page_url), tmp_path / "one")
    second = kernel_on(FIND, tmp_path / "two")
    try:
        pid_first, pid_second = first.spawn("chat"), second.spawn("chat")
        assert pid_first == pid_second  # the same pid in each kernel, and still apart
        assert syscall(first, pid_first, f"open {page_url}")["ok"]
        found = syscall(second, pid_second, "find fox on the page")
    finally:
        first.shutdown()
        second.shutdown()
    assert not found["ok"] and "no page is open" in found["error"]


def test_kernel_shutdown_stops_the_registry_and_tears_each_device_down_last_first(tmp_path):
    torn: list[tuple[str, object]] = []

    def stateful(name: str) -> Device:
        device = Device(name, description=f"The {name} device.")

        @device.setup
        def setup(context: DeviceContext) -> dict:
            return {"name": name, "folder": context.data_dir}

        @device.teardown
        def teardown(state: dict) -> None:
            torn.append((name, state))

        @device.call
        def where(context: CallContext) -> str:
            """Where the instance keeps its files."""
            return str(context.state["folder"])

        return device

    kernel = kernel_on(["CALL alpha.where {}", "ANSWER: there."], tmp_path, stateful("alpha"), stateful("beta"))
    pid = kernel.spawn()
    call = syscall(kernel, pid, "where does alpha keep its files?")
    assert torn == []
    kernel.shutdown()
    assert call["ok"] and call["result"] == str(tmp_path / "devices" / "alpha")
    assert [name for name, _ in torn] == ["beta", "alpha"]
    assert torn[1][1] == {"name": "alpha", "folder": tmp_path / "devices" / "alpha"}
    assert not kernel.registry.started
    kernel.registry.stop()  # idempotent
    assert len(torn) == 2


class _Late:
    """A device whose call blocks until released, then tries to commit a side effect."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.started, self.release, self.returned = threading.Event(), threading.Event(), threading.Event()
        self.written: list[str] = []
        self.refused: list[str] = []
        self.contexts: list[CallContext] = []
        self.device = Device("late", description="Writes a note, slowly.")
        self.device.call(self.write, timeout_s=timeout_s, side_effects=True)

    def write(self, text: str, context: CallContext) -> str:
        """Write a note.

        Args:
            text: The note.
        """
        self.contexts.append(context)
        self.started.set()
        try:
            self.release.wait(30)
            with context.commit():
                self.written.append(text)
            return "written"
        except Cancelled as exc:
            self.refused.append(str(exc))
            raise
        finally:
            self.returned.set()


def test_a_timed_out_calls_late_side_effect_never_happens(tmp_path):
    late = _Late(timeout_s=0.2)
    kernel = kernel_on(['CALL late.write {"text": "hello"}', "ANSWER: I could not."], tmp_path, late.device)
    try:
        call = syscall(kernel, kernel.spawn(), "write hello")
        # the model has been told it failed; now the device wakes up and tries to write
        late.release.set()
        assert late.returned.wait(10)
    finally:
        kernel.shutdown()
    assert not call["ok"] and "did not answer within 0.2 s" in call["error"]
    assert late.written == [] and len(late.refused) == 1
    [context] = late.contexts
    assert context.cancelled and "deadline" in context.reason and context.pid == 1


def test_stopping_a_turn_sets_its_calls_cancel_event(tmp_path):
    late = _Late()
    kernel = kernel_on(['CALL late.write {"text": "hello"}', "ANSWER: Stopped."], tmp_path, late.device)
    try:
        pid = kernel.spawn()
        turn = kernel.submit(pid, "write hello")
        assert late.started.wait(10)
        kernel.stop(pid)
        result = turn.result(10)
        [context] = late.contexts
        assert context.cancel_event.wait(10)
        late.release.set()
        assert late.returned.wait(10)
    finally:
        kernel.shutdown()
    assert result.stopped or not result.syscalls[0]["ok"]
    assert late.written == [] and context.reason == "stopped by the user"


def test_kernel_shutdown_cancels_a_call_in_flight(tmp_path):
    late = _Late()
    kernel = kernel_on(['CALL late.write {"text": "hello"}', "ANSWER: -"], tmp_path, late.device)
    kernel.submit(kernel.spawn(), "write hello")
    assert late.started.wait(10)
    kernel.shutdown()
    [context] = late.contexts
    assert context.cancelled and context.reason == "the OS shut down"
    late.release.set()
    assert late.returned.wait(10) and late.written == []


def test_a_call_queued_behind_busy_workers_past_its_deadline_never_runs(tmp_path):
    late = _Late(timeout_s=30.0)
    ran: list[str] = []

    @late.device.call(timeout_s=0.2, side_effects=True)
    def quick(text: str) -> str:
        """Write at once.

        Args:
            text: The note.
        """
        ran.append(text)
        return "done"

    registry = DeviceRegistry()
    registry.register(late.device)
    dispatcher = Dispatcher(registry, GrantPolicy())
    busy = [dispatcher.submit("late.write", {"text": str(i)}) for i in range(WORKERS_PER_DEVICE)]
    queued = dispatcher.call_blocking("late.quick", {"text": "x"})  # every worker is busy
    late.release.set()
    results = [future.result(10) for future in busy]
    workers = [t for t in threading.enumerate() if t.name.startswith("device-late-")]
    dispatcher.close()  # the workers take the queued call, then end
    for worker in workers:
        worker.join(10)
    assert len(workers) == WORKERS_PER_DEVICE and not any(w.is_alive() for w in workers)
    assert not queued.ok and "did not answer within 0.2 s" in queued.error
    assert all(r.ok for r in results) and len(late.written) == WORKERS_PER_DEVICE
    assert ran == []  # its turn came after its deadline: it never ran


def test_a_registry_stop_ends_its_mcp_server_processes(tmp_path):
    installed("mcp")
    server, spec = notes_server(tmp_path / "mcp")
    registry = DeviceRegistry.from_entry_points()
    registry.start(tmp_path / "data", {"mcp": {"servers": {"notes": server}}})
    assert "notes" in [d.name for d in registry.devices()] and running(spec) == 1
    registry.stop()
    assert running(spec) == 0 and "notes" not in [d.name for d in registry.devices()]
    registry.start(tmp_path / "data", {"mcp": {"servers": {"notes": server}}})  # a stopped registry starts again
    try:
        assert "notes" in [d.name for d in registry.devices()] and running(spec) == 1
    finally:
        registry.stop()
    assert running(spec) == 0


def test_a_call_that_cancels_itself_still_answers_once():
    device = Device("quitter", description="Gives up.")

    @device.call(timeout_s=30.0)
    def give_up(context: CallContext) -> str:
        """Give up at once."""
        context.cancel("it gave up")
        return "this answer is dropped"

    registry = DeviceRegistry()
    registry.register(device)
    dispatcher = Dispatcher(registry, GrantPolicy())
    try:
        result = dispatcher.submit("quitter.give_up", {}).result(10)  # not the 30 s deadline
    finally:
        dispatcher.close()
    assert not result.ok and "was cancelled: it gave up" in result.error


def test_entry_points_may_name_a_device_or_a_factory_and_each_registry_gets_its_own(monkeypatch, tmp_path):
    from dataclasses import dataclass

    import llmos.kernel.registry as registry_module
    from llmos.kernel.devices import Unavailable

    @dataclass
    class _EntryPoint:  # what importlib.metadata gives the registry
        name: str
        value: str
        target: object

        def load(self) -> object:
            return self.target

    def bare() -> Device:
        return Device("bare", description="A fresh device per registry.")

    seen: list[DeviceContext] = []

    def configured(context: DeviceContext) -> list:
        seen.append(context)
        return [Device(f"made_{n}", description="Made from the settings.") for n in context.settings["names"]] + [
            Unavailable("ghost", "it would not start")]

    fixed = Device("fixed", description="A module-level device (the v0 form).")
    points = [_EntryPoint("bare", "x:bare", bare), _EntryPoint("fixed", "x:fixed", fixed),
              _EntryPoint("made", "x:configured", configured), _EntryPoint("junk", "x:junk", 42)]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points)
    one, two = DeviceRegistry.from_entry_points(), DeviceRegistry.from_entry_points()
    assert one.get("bare") is not two.get("bare") and one.get("fixed") is two.get("fixed")
    assert [b.name for b in one.broken] == ["junk"] and seen == []  # the configured factory waits for start
    one.start(tmp_path, {"made": {"names": ["a", "b"]}})
    assert [d.name for d in one.devices()] == ["bare", "fixed", "made_a", "made_b"]
    assert seen == [DeviceContext(tmp_path / "devices" / "made", {"names": ["a", "b"]})]
    assert ("made.ghost", "it would not start") in [(b.name, b.error) for b in one.broken]
    assert [d.name for d in two.devices()] == ["bare", "fixed"]  # not started: nothing made
    one.stop()
    assert [d.name for d in one.devices()] == ["bare", "fixed"] and [b.name for b in one.broken] == ["junk"]


class _Stuck:
    """A device whose call enters its commit block and stays there until released."""

    def __init__(self, timeout_s: float) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        self.device = Device("stuck", description="Stores a note on a server that hangs.")
        self.device.call(self.store, timeout_s=timeout_s, side_effects=True)

    def store(self, text: str, context: CallContext) -> str:
        """Store a note.

        Args:
            text: The note.
        """
        with context.commit():
            self.inside.set()
            self.release.wait(60)
        return "stored"


def test_a_commit_that_hangs_holds_up_neither_its_own_timeout_nor_another_calls(tmp_path):
    stuck, late = _Stuck(timeout_s=0.3), _Late(timeout_s=0.2)
    replies = ['CALL stuck.store {"text": "a"}', "ANSWER: It hung.", 'CALL late.write {"text": "b"}', "ANSWER: Late."]
    kernel = kernel_on(replies, tmp_path, stuck.device, late.device)
    try:
        pid = kernel.spawn()
        hung = syscall(kernel, pid, "store a")
        assert stuck.inside.is_set() and not stuck.release.is_set()  # still inside its commit block
        other = syscall(kernel, pid, "write b")  # the watchdog still times calls out
        assert not stuck.release.is_set()
    finally:
        stuck.release.set()
        late.release.set()
        kernel.shutdown()
    assert not hung["ok"] and "did not answer within 0.3 s" in hung["error"] and "may have happened" in hung["error"]
    assert not other["ok"] and "did not answer within 0.2 s" in other["error"]
    assert "may have happened" not in other["error"] and late.written == []


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 0, -1, 1e12])
def test_a_call_timeout_is_a_positive_finite_number_of_seconds(seconds):
    device = Device("clock", description="Waits.")
    with pytest.raises(ValueError, match="timeout_s must be"):
        device.call(lambda: "x", name="wait", timeout_s=seconds)


def test_an_mcp_server_named_like_a_built_in_device_is_refused_and_the_other_servers_keep_running(tmp_path):
    clash, clash_spec = notes_server(tmp_path / "mcp", name="memory")
    notes, notes_spec = notes_server(tmp_path / "mcp", name="notes")
    registry = DeviceRegistry.from_entry_points()
    registry.start(tmp_path / "data", {"mcp": {"servers": {"memory": clash, "notes": notes}}})
    try:
        assert any(b.name == "mcp.memory" and "already registered" in b.error for b in registry.broken)
        assert running(clash_spec) == 0 and running(notes_spec) == 1
        dispatcher = Dispatcher(registry, GrantPolicy(granted=["network", "files.write"]))
        result = dispatcher.submit("notes.add_note", {"text": "milk"}).result(30)
        dispatcher.close()
        assert result.ok, result.error
    finally:
        registry.stop()
    assert running(notes_spec) == 0


def test_a_factory_device_that_fails_to_start_is_made_anew_at_the_next_start(monkeypatch, tmp_path):
    import llmos.kernel.registry as registry_module

    class _EntryPoint:
        name, value = "flaky", "x:flaky"

        def load(self) -> object:
            return make

    def make(context: DeviceContext) -> list[Device]:
        device = Device("flaky", description="Fails to start.")
        device.setup(lambda _context: (_ for _ in ()).throw(OSError("no disk")))
        return [device]

    monkeypatch.setattr(registry_module, "entry_points", lambda group: [_EntryPoint()])
    registry = DeviceRegistry.from_entry_points()
    for _ in range(2):
        registry.start(tmp_path)
        assert [(b.name, "no disk" in b.error) for b in registry.broken] == [("flaky", True)]
        assert registry.devices() == []
        registry.stop()
    assert registry.devices() == [] and registry.broken == []
