"""The kernel on the real embedded model (llama-cpp-python), loaded once per run."""

from __future__ import annotations

import re
import threading

import pytest

from llmos.kernel import events
from llmos.kernel.backends.base import SamplingParams
from llmos.kernel.loop import Kernel
from llmos.kernel.process import Message, Priority
from llmos.kernel.prompt import render_message
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import TurnOptions
from tests.kernels import PauseAtToken, started

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
    assert re.search(r"\w", result.answer) and not result.stopped, result  # an answer, of any length


def test_context_switch_continuation_is_identical_to_an_uninterrupted_run(real_backend):
    params = SamplingParams(max_tokens=48)
    prompt_a = CHATML.format("Describe a lighthouse in three sentences.")
    prompt_b = CHATML.format("List five fruits.")
    reference = real_backend.open(101, prompt_a, params).next(48)
    assert len(reference) >= 2, reference
    half = len(reference) // 2  # interrupted mid-reply, however long the reply is on this machine
    switches = []
    real_backend.on_switch = switches.append
    try:
        a = real_backend.open(102, prompt_a, params)
        first = "".join(a.next(half))
        b = real_backend.open(103, prompt_b, params)
        other = "".join(b.next(24))  # another process takes the context
        rest = "".join(a.next(48))
    finally:
        real_backend.on_switch = None
    assert other and first + rest == "".join(reference)
    back = [s for s in switches if s.pid == 102 and s.previous == 103]
    assert back and back[0].method == "snapshot" and back[0].evaluated_tokens <= 1


def test_follow_up_turn_reuses_the_prefix(real_backend):
    kernel = Kernel(real_backend, DeviceRegistry.from_entry_points(), TurnOptions(max_answer_tokens=24))
    switches: list[events.ContextSwitched] = []
    kernel.bus.subscribe(lambda e: switches.append(e) if isinstance(e, events.ContextSwitched) else None)
    with started(kernel):
        pid = kernel.spawn()
        kernel.submit(pid, "Name a colour.").result(180)
        other = kernel.spawn()
        kernel.submit(other, "Name an animal.").result(180)  # takes the context away
        before = kernel.ram(pid)  # its context as it was left: pinned pages, the first turn
        switches.clear()
        kernel.submit(pid, "Name another one.").result(180)
    back = [s for s in switches if s.pid == pid]
    assert back, "no context switch back to the first process"
    # measured token counts, whatever the answers' length: the pinned pages (boot prompt, examples)
    # are always kept; a restored snapshot keeps the first turn too, and only the new message (and
    # the assistant's opening) is evaluated; a re-prefill evaluates at most the conversation since
    pinned = sum(p.tokens for p in before.pages if p.pinned)
    conversation = before.tokens - pinned
    new = len(real_backend.tokenize(render_message(Message("user", "Name another one.")), add_bos=False))
    assert back[0].method in ("snapshot", "prefill")
    assert back[0].reused_tokens >= pinned
    if back[0].method == "snapshot":
        assert back[0].reused_tokens >= before.tokens - 2 and back[0].evaluated_tokens <= new + 8, back[0]
    else:
        assert back[0].evaluated_tokens <= conversation + new + 8, back[0]


def test_voice_preempts_a_long_chat_reply_on_the_real_model(real_backend):
    opts = TurnOptions(slice_tokens=8, max_answer_tokens=160, max_rounds=0)  # scheduling only: no device calls
    kernel = Kernel(real_backend, DeviceRegistry.from_entry_points(), opts)
    seen: list[events.Event] = []
    lock = threading.Lock()

    def observe(e: events.Event) -> None:
        with lock:
            seen.append(e)

    kernel.bus.subscribe(observe)
    with started(kernel):
        chat_pid = kernel.spawn("chat", Priority.CHAT)
        voice_pid = kernel.spawn("voice", Priority.VOICE)
        pause = PauseAtToken(chat_pid, n=2)
        kernel.bus.subscribe(pause)
        chat = kernel.submit(chat_pid, "Write a long story about a dragon who learns to bake bread.")
        assert pause.reached.wait(300), "the chat reply never started"
        voice = kernel.submit(voice_pid, "Say hello.")  # while the chat reply is under way
        pause.resume.set()
        voice_result = voice.result(180)
        chat_done_before_voice = chat.done()
        chat_result = chat.result(300)
    assert not chat_done_before_voice
    assert voice_result.answer and chat_result.answer
    preempted = [e for e in seen if isinstance(e, events.ProcessStateChanged) and e.reason == "preempted"]
    assert any(e.pid == chat_pid for e in preempted)
    # once the voice turn started, no chat token was produced until the voice turn finished
    start = next(i for i, e in enumerate(seen) if isinstance(e, events.ProcessStateChanged)
                 and e.pid == voice_pid and e.new == "running")
    end = next(i for i, e in enumerate(seen) if isinstance(e, events.TurnFinished) and e.pid == voice_pid)
    assert not any(isinstance(e, events.Token) and e.pid == chat_pid for e in seen[start:end])
