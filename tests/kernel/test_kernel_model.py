"""The kernel on the real embedded model (llama-cpp-python), loaded once per run."""

from __future__ import annotations

import threading
import time

import pytest

from llmos.kernel import events
from llmos.kernel.backends.base import SamplingParams
from llmos.kernel.loop import Kernel
from llmos.kernel.process import Priority
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import TurnOptions

pytestmark = pytest.mark.model

CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def test_calculator_round_trip(real_kernel):
    seen: list[events.Event] = []
    real_kernel.bus.subscribe(seen.append)
    result = real_kernel.ask("What is 1234 * 5678?").result(180)
    calc = [s for s in result.syscalls if s["device"] == "calculator"]
    assert calc, f"no calculator call: {result}"
    assert calc[0]["result"] == "7006652" and calc[0]["ok"]
    assert "7006652" in result.answer.replace(",", "")
    assert any(isinstance(e, events.SyscallFinished) and e.result == "7006652" for e in seen)
    assert result.timings["tokens"] > 0 and result.timings["ttft_s"] > 0


def test_a_greeting_needs_no_syscall(real_kernel):
    result = real_kernel.ask("Hi, how are you?").result(180)
    assert result.syscalls == []
    assert len(result.answer) > 2


def test_context_switch_continuation_is_identical_to_an_uninterrupted_run(real_backend):
    params = SamplingParams(max_tokens=48)
    prompt_a = CHATML.format("Describe a lighthouse in three sentences.")
    prompt_b = CHATML.format("List five fruits.")
    whole = "".join(real_backend.open(101, prompt_a, params).next(48))
    switches = []
    real_backend.on_switch = switches.append
    try:
        a = real_backend.open(102, prompt_a, params)
        first = "".join(a.next(16))
        b = real_backend.open(103, prompt_b, params)
        other = "".join(b.next(24))  # another process takes the context
        rest = "".join(a.next(32))
    finally:
        real_backend.on_switch = None
    assert other and first + rest == whole
    back = [s for s in switches if s.pid == 102 and s.previous == 103]
    assert back and back[0].method == "snapshot" and back[0].evaluated_tokens <= 1


def test_follow_up_turn_reuses_the_prefix(real_backend):
    kernel = Kernel(real_backend, DeviceRegistry.from_entry_points(), TurnOptions(max_answer_tokens=24)).start()
    switches: list[events.ContextSwitched] = []
    kernel.bus.subscribe(lambda e: switches.append(e) if isinstance(e, events.ContextSwitched) else None)
    try:
        pid = kernel.spawn()
        kernel.submit(pid, "Name a colour.").result(180)
        other = kernel.spawn()
        kernel.submit(other, "Name an animal.").result(180)  # takes the context away
        switches.clear()
        kernel.submit(pid, "Name another one.").result(180)
    finally:
        kernel.shutdown(close_backend=False)
    back = [s for s in switches if s.pid == pid]
    assert back, "no context switch back to the first process"
    # the shared boot prompt and the first turn stay; only the new message is evaluated
    assert back[0].method in ("snapshot", "prefill")
    assert back[0].reused_tokens > 300
    assert back[0].evaluated_tokens < 80


def test_voice_preempts_a_long_chat_reply_on_the_real_model(real_backend):
    opts = TurnOptions(slice_tokens=8, max_answer_tokens=160, max_rounds=0)  # scheduling only: no device calls
    kernel = Kernel(real_backend, DeviceRegistry.from_entry_points(), opts).start()
    seen: list[events.Event] = []
    lock = threading.Lock()

    def observe(e: events.Event) -> None:
        with lock:
            seen.append(e)

    kernel.bus.subscribe(observe)
    try:
        chat_pid = kernel.spawn("chat", Priority.CHAT)
        chat = kernel.submit(chat_pid, "Write a long story about a dragon who learns to bake bread.")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(isinstance(e, events.Token) and e.pid == chat_pid for e in seen) < 10:
            time.sleep(0.05)
        voice = kernel.ask("Say hello.", Priority.VOICE, name="voice")
        voice_result = voice.result(180)
        chat_done_before_voice = chat.done()
        chat_result = chat.result(300)
    finally:
        kernel.shutdown(close_backend=False)
    assert not chat_done_before_voice
    assert voice_result.answer and chat_result.answer
    preempted = [e for e in seen if isinstance(e, events.ProcessStateChanged) and e.reason == "preempted"]
    assert any(e.pid == chat_pid for e in preempted)
    # once the voice turn started, no chat token was produced until the voice turn finished
    voice_pid = voice_result.pid
    start = next(i for i, e in enumerate(seen) if isinstance(e, events.ProcessStateChanged)
                 and e.pid == voice_pid and e.new == "running")
    end = next(i for i, e in enumerate(seen) if isinstance(e, events.TurnFinished) and e.pid == voice_pid)
    assert not any(isinstance(e, events.Token) and e.pid == chat_pid for e in seen[start:end])
