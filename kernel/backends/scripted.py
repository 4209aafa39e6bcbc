"""A scripted backend for fast tests: it replies what it was told to, in protocol form.

``enqueue("CALL calculator.evaluate {\\"expression\\": \\"2+2\\"}", "ANSWER: It is 4.")`` makes
the next turn call the calculator and then answer. Every prompt it was shown is kept in
``history``. It tokenizes by whitespace-separated words, so slices and preemption behave as
with a real model, only faster.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..prompt import ANSWER_PREFIX, CALL_PREFIX
from ..syscalls.decide import CALIBRATION_PID
from .base import BackendError, SamplingParams, StreamStats, SwitchInfo

_WORD = re.compile(r"\S+\s*|\s+")


class ScriptedBackend:
    name = "scripted"
    supports_scoring = True

    def __init__(self, replies: list[str] | None = None, *, delay_per_token: float = 0.0,
                 scoring: bool = True, fail_load: str | None = None,
                 responder: Callable[[str], str] | None = None) -> None:
        self.model = "scripted"
        self.n_ctx = 32768
        self.supports_scoring = scoring
        self.on_switch: Callable[[SwitchInfo], None] | None = None
        self.replies: deque[str] = deque(replies or [])
        self.history: list[str] = []
        self.delay_per_token = delay_per_token
        self.fail_load = fail_load
        self.responder = responder  # prompt -> reply, used when no reply is queued
        self.owner: int | None = None
        self.loaded = False

    def enqueue(self, *replies: str) -> None:
        self.replies.extend(replies)

    def load(self) -> None:
        if self.fail_load:
            raise BackendError(self.fail_load)
        self.loaded = True

    def close(self) -> None:
        self.loaded = False

    def tokenize(self, text: str) -> list[int]:
        return [hash(w) & 0xFFFF for w in _WORD.findall(text)]

    def _switch(self, pid: int) -> None:
        if self.owner != pid:
            if self.on_switch is not None:
                self.on_switch(SwitchInfo(pid, self.owner, "prefill", 0, 0, 0.0))
            self.owner = pid

    def _reply(self, prompt: str, pop: bool) -> str:
        if self.replies:
            return self.replies.popleft() if pop else self.replies[0]
        if self.responder is not None:
            opening = "<|im_start|>assistant\n"
            return self.responder(prompt[: prompt.rindex(opening) + len(opening)])
        return f"{ANSWER_PREFIX} (no scripted reply)"

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        if pid == CALIBRATION_PID:  # the scripted model has no habits to calibrate away
            return [0.0] * len(continuations)
        self._switch(pid)
        self.history.append(prompt)
        reply = self._reply(prompt, pop=False)
        return [0.0 if reply.startswith(c) else -20.0 for c in continuations]

    def open(self, pid: int, prompt: str, params: SamplingParams, json_schema: dict[str, Any] | None = None) -> "ScriptedStream":
        self._switch(pid)
        self.history.append(prompt)
        reply = self._reply(prompt, pop=True)
        text = reply
        if self.supports_scoring:
            if prompt.endswith(ANSWER_PREFIX):
                text = reply.removeprefix(ANSWER_PREFIX)
            elif prompt.rstrip().split("\n")[-1].startswith(CALL_PREFIX):
                text = reply.split(" ", 2)[2] if reply.startswith(CALL_PREFIX) else reply
        return ScriptedStream(self, pid, text, params)

    def release(self, pid: int) -> None:
        if self.owner == pid:
            self.owner = None


class ScriptedStream:
    def __init__(self, backend: ScriptedBackend, pid: int, text: str, params: SamplingParams) -> None:
        self.backend = backend
        self.pid = pid
        self._words = deque(_WORD.findall(text))
        self.params = params
        self.stats = StreamStats(prompt_tokens=0)

    @property
    def finished(self) -> bool:
        return self.stats.finish_reason is not None

    def next(self, max_tokens: int) -> list[str]:
        self.backend._switch(self.pid)
        pieces: list[str] = []
        for _ in range(max_tokens):
            if not self._words:
                self.stats.finish_reason = "stop"
                break
            if self.stats.generated_tokens >= self.params.max_tokens:
                self.stats.finish_reason = "length"
                break
            if self.backend.delay_per_token:
                time.sleep(self.backend.delay_per_token)
            if self.stats.first_token_at is None:
                self.stats.first_token_at = time.monotonic()
            pieces.append(self._words.popleft())
            self.stats.generated_tokens += 1
        if not self._words and not self.finished:
            self.stats.finish_reason = "stop"
        return pieces

    def close(self) -> None:
        self._words.clear()
