"""The kernel loop with the scripted backend: fast, deterministic."""

from __future__ import annotations

import threading
import time

import pytest

from llmos.kernel import events
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.devices import Device
from llmos.kernel.loop import Kernel, TurnError
from llmos.kernel.process import Priority
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.claims import HOLD_CHARS
from llmos.kernel.turn import TurnOptions
from tests.kernels import PauseAtToken


def make_registry(*extra: Device) -> DeviceRegistry:
    registry = DeviceRegistry.from_entry_points()
    for device in extra:
        registry.register(device)
    return registry


@pytest.fixture()
def recorder():
    seen: list[events.Event] = []
    lock = threading.Lock()

    def observe(event: events.Event) -> None:
        with lock:
            seen.append(event)

    observe.seen = seen  # type: ignore[attr-defined]
    observe.lock = lock  # type: ignore[attr-defined]
    return observe


def start(backend: ScriptedBackend, registry: DeviceRegistry | None = None, **opts) -> Kernel:
    kernel = Kernel(backend, registry or make_registry(), TurnOptions(**opts)).start()
    kernel.wait_ready(5)
    return kernel


def test_answer_without_a_call_streams_tokens(recorder):
    kernel = start(ScriptedBackend(["ANSWER: Hello there, friend."]))
    kernel.bus.subscribe(recorder)
    result = kernel.ask("hi").result(5)
    kernel.shutdown()
    assert result.answer == "Hello there, friend."
    assert result.syscalls == []
    tokens = [e.text for e in recorder.seen if isinstance(e, events.Token)]
    assert len(tokens) >= 3 and "".join(tokens).strip() == "Hello there, friend."


def test_calculator_round_trip_reaches_the_device_and_the_answer(recorder):
    backend = ScriptedBackend(['CALL calculator.evaluate {"expression": "1234 * 5678"}', "ANSWER: It is 7006652."])
    kernel = start(backend)
    kernel.bus.subscribe(recorder)
    result = kernel.ask("What is 1234 * 5678?").result(5)
    kernel.shutdown()
    assert result.syscalls[0]["device"] == "calculator" and result.syscalls[0]["call"] == "evaluate"
    assert result.syscalls[0]["result"] == "7006652" and result.syscalls[0]["ok"] is True
    assert "7006652" in result.answer
    # the device's result was shown to the model before it answered
    assert '<tool_response call="calculator.evaluate" trust="trusted">\n7006652' in backend.history[-1]
    kinds = [type(e).__name__ for e in recorder.seen]
    assert kinds.index("SyscallStarted") < kinds.index("SyscallFinished") < kinds.index("TurnFinished")


def test_malformed_call_becomes_an_error_page_not_a_crash():
    backend = ScriptedBackend(['CALL calculator.evaluate {"expression": "2+', "ANSWER: Sorry, that went wrong."])
    kernel = start(backend)
    result = kernel.ask("2+?").result(5)
    kernel.shutdown()
    assert result.syscalls[0]["ok"] is False
    assert "malformed call" in result.syscalls[0]["error"]
    assert "Error: malformed call" in backend.history[-1]
    assert result.answer == "Sorry, that went wrong."


def test_unknown_call_and_bad_arguments_are_error_pages():
    backend = ScriptedBackend(scoring=False)
    backend.enqueue('CALL nosuch.device {"x": 1}', 'CALL calculator.evaluate {"expr": "1"}', "ANSWER: done")
    kernel = start(backend)
    result = kernel.ask("do it").result(5)
    kernel.shutdown()
    assert [s["ok"] for s in result.syscalls] == [False, False]
    assert "no device named 'nosuch'" in result.syscalls[0]["error"]
    assert "invalid arguments" in result.syscalls[1]["error"]
    assert result.answer == "done"


def test_a_backend_that_cannot_score_streams_its_answer_and_still_calls(recorder):
    # the remote protocol: the model writes CALL or ANSWER itself; the answer streams as it comes
    backend = ScriptedBackend(scoring=False)
    backend.enqueue('CALL calculator.evaluate {"expression": "6 * 7"}', "ANSWER: Six times seven is 42, my friend.")
    kernel = start(backend)
    kernel.bus.subscribe(recorder)
    result = kernel.ask("six times seven?").result(5)
    kernel.shutdown()
    assert result.syscalls[0]["result"] == "42" and result.answer == "Six times seven is 42, my friend."
    tokens = [e.text for e in recorder.seen if isinstance(e, events.Token)]
    assert len(tokens) >= 4 and "".join(tokens).strip() == result.answer  # piece by piece, no CALL shown


def test_state_events_carry_the_kernel_enum_which_still_reads_as_its_name(recorder):
    from llmos.kernel.process import ProcessState

    kernel = start(ScriptedBackend(["ANSWER: ok"]))
    kernel.bus.subscribe(recorder)
    kernel.ask("hi").result(5)
    kernel.shutdown()
    changes = [e for e in recorder.seen if isinstance(e, events.ProcessStateChanged)]
    assert changes and all(isinstance(e.new, ProcessState) and isinstance(e.old, ProcessState) for e in changes)
    assert [e.new for e in changes][-2:] == ["running", "idle"] and f"{changes[-1].new}" == "idle"


def test_round_limit_ends_a_turn_that_keeps_calling():
    calls = [f'CALL calculator.evaluate {{"expression": "{i}+1"}}' for i in range(10)]
    backend = ScriptedBackend(calls + ["ANSWER: finally"])
    kernel = start(backend, max_rounds=3)
    result = kernel.ask("loop").result(5)
    kernel.shutdown()
    assert len(result.syscalls) == 3


def test_raising_and_hanging_devices_give_errors_and_the_kernel_keeps_serving():
    flaky = Device("flaky", description="misbehaves")

    @flaky.call
    def boom() -> str:
        """Raise."""
        raise RuntimeError("kaput")

    released = threading.Event()

    @flaky.call(timeout_s=1.0)
    def hang() -> str:
        """Hang."""
        released.wait(30)  # until the test is over
        return "never"

    backend = ScriptedBackend(scoring=False)
    backend.enqueue("CALL flaky.boom {}", "CALL flaky.hang {}")
    kernel = start(backend, make_registry(flaky))
    hanging = threading.Event()
    kernel.bus.subscribe(
        lambda e: hanging.set() if isinstance(e, events.SyscallStarted) and e.call == "hang" else None
    )
    slow = kernel.ask("break things")
    assert hanging.wait(5)
    backend.enqueue("ANSWER: hi")
    other = kernel.ask("hello")  # another process is served while the device hangs
    assert other.result(5).answer == "hi"
    assert not slow.done()
    backend.enqueue("ANSWER: both failed")
    result = slow.result(5)
    kernel.shutdown()
    released.set()
    assert "RuntimeError: kaput" in result.syscalls[0]["error"]
    assert "did not answer within 1 s" in result.syscalls[1]["error"]
    assert result.answer == "both failed"


@pytest.mark.parametrize("check_claims", [False, True])
def test_stop_interrupts_a_reply_and_keeps_the_partial_answer(check_claims):
    words = " ".join(f"w{i}" for i in range(400))
    backend = ScriptedBackend([f"ANSWER: {words}"])
    kernel = start(backend, slice_tokens=4, check_claims=check_claims)
    pid = kernel.spawn()
    pause = PauseAtToken(pid, n=10)
    kernel.bus.subscribe(pause)
    future = kernel.submit(pid, "talk")
    assert pause.reached.wait(5)
    kernel.stop(pid)
    pause.resume.set()
    result = future.result(5)
    kernel.shutdown()
    assert result.stopped is True
    assert result.answer.startswith("w0 w1") and len(result.answer.split()) < 400
    # the turn checks for a stop after every token; the claim check shows each piece once the
    # HOLD_CHARS after it have come (tokens of 3 characters or more here), so those were made too
    held = HOLD_CHARS // 3 if check_claims else 0
    assert 10 <= result.timings["tokens"] <= 11 + held


def _chat_then_voice(recorder, slice_tokens: int, pause_at: int):
    """A kernel whose chat process is mid-way through a 300-word reply (held at its ``pause_at``-th
    token), and a voice process to submit then: (kernel, chat_pid, voice_pid, chat future, pause)."""
    words = " ".join(f"c{i}" for i in range(300))
    backend = ScriptedBackend([f"ANSWER: {words}", "ANSWER: voice reply"])
    kernel = start(backend, slice_tokens=slice_tokens)
    kernel.bus.subscribe(recorder)
    chat_pid, voice_pid = kernel.spawn("chat", Priority.CHAT), kernel.spawn("voice", Priority.VOICE)
    pause = PauseAtToken(chat_pid, n=pause_at)
    kernel.bus.subscribe(pause)
    chat = kernel.submit(chat_pid, "long")
    assert pause.reached.wait(5)  # the chat reply is under way
    return kernel, chat_pid, voice_pid, chat, pause


def test_voice_preempts_chat_at_a_slice_boundary(recorder):
    kernel, chat_pid, voice_pid, chat, pause = _chat_then_voice(recorder, slice_tokens=8, pause_at=1)
    voice = kernel.submit(voice_pid, "short")
    pause.resume.set()
    voice_result = voice.result(10)
    chat_result = chat.result(10)
    kernel.shutdown()
    assert voice_result.answer == "voice reply"
    assert len(chat_result.answer.split()) == 300
    finished = [e.pid for e in recorder.seen if isinstance(e, events.TurnFinished)]
    assert finished == [voice_pid, chat_pid], "the voice turn did not finish while the chat reply was running"
    chat_tokens = [i for i, e in enumerate(recorder.seen) if isinstance(e, events.Token) and e.pid == chat_pid]
    voice_done = recorder.seen.index(next(e for e in recorder.seen if isinstance(e, events.TurnFinished)))
    assert chat_tokens[0] < voice_done < chat_tokens[-1]  # in the middle of the chat reply
    preempted = [e for e in recorder.seen if isinstance(e, events.ProcessStateChanged) and e.reason == "preempted"]
    assert preempted and preempted[0].pid == chat_result.pid


def test_a_turn_of_higher_priority_does_not_wait_out_the_slice(recorder):
    # the running slice ends at the next token once a higher priority is ready, not after 64
    kernel, chat_pid, voice_pid, chat, pause = _chat_then_voice(recorder, slice_tokens=64, pause_at=2)
    with recorder.lock:
        submitted = len(recorder.seen)
    voice = kernel.submit(voice_pid, "short")
    pause.resume.set()
    assert voice.result(10).answer == "voice reply"
    chat.result(10)
    kernel.shutdown()
    seen = recorder.seen
    running = next(i for i, e in enumerate(seen) if isinstance(e, events.ProcessStateChanged)
                   and e.pid == voice_pid and e.new == "running")
    late = [e for e in seen[submitted:running] if isinstance(e, events.Token) and e.pid == chat_pid]
    assert len(late) <= 2, f"the chat made {len(late)} more tokens before the voice turn ran"


def test_round_robin_between_equal_priorities():
    backend = ScriptedBackend(delay_per_token=0.001)
    backend.enqueue("ANSWER: " + " ".join(["a"] * 64), "ANSWER: " + " ".join(["b"] * 64))
    kernel = start(backend, slice_tokens=8)
    order: list[int] = []
    kernel.bus.subscribe(lambda e: order.append(e.pid) if isinstance(e, events.Token) else None)
    first, second = kernel.ask("one"), kernel.ask("two")
    first.result(5), second.result(5)
    kernel.shutdown()
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches >= 4  # they took turns, slice by slice


def test_a_model_that_fails_to_load_refuses_turns_with_its_reason():
    kernel = Kernel(ScriptedBackend(fail_load="model file not found: /x.gguf"), make_registry()).start()
    with pytest.raises(Exception, match="model file not found"):
        kernel.wait_ready(5)
    with pytest.raises(TurnError, match="model file not found"):
        kernel.ask("hi").result(5)
    kernel.shutdown()


def test_processes_are_listed_and_kill_ends_one():
    kernel = start(ScriptedBackend(["ANSWER: ok"]))
    pid = kernel.spawn("job", Priority.BACKGROUND)
    kernel.submit(pid, "x").result(5)
    info = {p["pid"]: p for p in kernel.processes()}
    assert info[pid]["state"] == "idle" and info[pid]["priority"] == "background"
    kernel.kill(pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and {p["pid"]: p for p in kernel.processes()}[pid]["state"] != "done":
        time.sleep(0.01)
    assert {p["pid"]: p for p in kernel.processes()}[pid]["state"] == "done"
    with pytest.raises(TurnError):
        kernel.submit(pid, "again").result(5)
    kernel.shutdown()


def test_a_process_is_idle_when_its_caller_hears_the_result():
    backend = ScriptedBackend(["ANSWER: one", "ANSWER: two"])
    kernel = Kernel(backend, DeviceRegistry()).start()
    try:
        pid = kernel.spawn()
        states = []
        for text in ("first", "second"):
            future = kernel.submit(pid, text)
            future.add_done_callback(lambda f: states.append(
                next(p["state"] for p in kernel.processes() if p["pid"] == pid)))
            future.result(5)
        assert states == ["idle", "idle"]
    finally:
        kernel.shutdown()


def test_a_loop_whose_process_waits_for_a_device_blocks_instead_of_polling():
    slow = Device("slow", description="answers when released")
    started, released = threading.Event(), threading.Event()

    @slow.call(timeout_s=30.0)
    def wait() -> str:
        """Wait."""
        started.set()
        released.wait(30)
        return "released"

    backend = ScriptedBackend(scoring=False)
    backend.enqueue("CALL slow.wait {}", "ANSWER: done")
    kernel = Kernel(backend, make_registry(slow), TurnOptions())
    steps = []
    collect = kernel._collect_completions
    kernel._collect_completions = lambda: (steps.append(1), collect())[1]  # one per pass of the loop
    kernel.start().wait_ready(5)
    turn = kernel.ask("wait for it")
    assert started.wait(5)
    before = len(steps)
    threading.Event().wait(1.0)  # a window to count the loop's passes in, not a synchronisation
    passes = len(steps) - before
    released.set()
    result = turn.result(5)
    kernel.shutdown()
    assert result.syscalls[0]["result"] == "released" and result.answer == "done"
    assert passes <= 4  # the 0.5 s safety net; a loop polling every 20 ms passed about 50 times
