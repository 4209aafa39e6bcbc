"""Soak tests (marked slow: CI runs them, the default `make test` does not)."""

from __future__ import annotations

import random
import re

import pytest

from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.loop import Kernel
from llmos.kernel.process import Priority
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import TurnOptions

pytestmark = pytest.mark.slow


def test_many_processes_many_turns_nothing_lost():
    rng = random.Random(7)

    def respond(prompt: str) -> str:
        """Call the calculator once per request, then answer with the request's number."""
        request = prompt.rsplit("request ", 1)[1].split("<", 1)[0]
        if prompt.rstrip().endswith("</tool_response><|im_end|>\n<|im_start|>assistant"):
            return f"ANSWER: turn {request} done"
        return f'CALL calculator.evaluate {{"expression": "{request}*2"}}'

    backend = ScriptedBackend(responder=respond)
    kernel = Kernel(backend, DeviceRegistry.from_entry_points(), TurnOptions(slice_tokens=3)).start()
    kernel.wait_ready(5)
    pids = [kernel.spawn(f"p{i}", rng.choice(list(Priority))) for i in range(8)]
    futures = [kernel.submit(pids[n % len(pids)], f"request {n}") for n in range(400)]
    results = [f.result(60) for f in futures]
    kernel.shutdown()
    assert len(results) == 400
    assert all(len(r.syscalls) == 1 and r.syscalls[0]["ok"] for r in results)
    assert all(r.syscalls[0]["result"] == str(int(r.answer.split()[1]) * 2) for r in results)
    assert sorted(int(r.answer.split()[1]) for r in results) == list(range(400))
    assert all(p["state"] == "idle" for p in kernel.processes())


@pytest.mark.model
def test_a_long_conversation_on_the_real_model_keeps_its_turns(real_backend):
    from tests.kernels import started

    with started(Kernel(real_backend, DeviceRegistry.from_entry_points(), TurnOptions(max_answer_tokens=16))) as kernel:
        pid = kernel.spawn()
        answers = [kernel.submit(pid, f"Reply with the number {n}.").result(300).answer for n in range(12)]
    assert len(answers) == 12 and all(answers)
    said = [_says_number(a, n) for n, a in enumerate(answers)]
    assert sum(said) >= 8, list(zip(range(12), answers))


_WORDS = "zero one two three four five six seven eight nine ten eleven".split()


def _says_number(answer: str, n: int) -> bool:
    """The answer says ``n``, as digits or as a word ("Seven." answers "Reply with the number 7.")."""
    words = re.findall(r"[a-z]+|\d+", answer.lower())
    return str(n) in words or _WORDS[n] in words
