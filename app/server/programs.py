"""What a request runs as in the kernel: a task of its own process, at the ``api`` priority.

- The plain model: :func:`completion` generates after the client's own prompt (its messages in
  ChatML, or a raw prompt) with the client's sampling, optionally under a JSON schema's grammar.
- ``llmos``: :func:`os_turn` is the OS's own turn (devices, memory, journal) on the last user
  message, with the earlier messages as the process's history.

Both run on the kernel thread, a slice at a time, so the scheduler interleaves them with the
desktop's processes; both return a :class:`Completion` (a ``TurnResult`` with usage).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmos.kernel.backends.base import SamplingParams
from llmos.kernel.process import Message, Process, Task, TurnResult
from llmos.kernel.prompt import ANSWER_PREFIX, as_text, render
from llmos.kernel.syscalls.grammar import GrammarError
from llmos.kernel.turn import TurnServices, generate, run_turn

from .requests import ChatMessage, Sampling

DEFAULT_SYSTEM = "You are a helpful assistant."
END_OF_TURN = "<|im_end|>"


@dataclass
class Completion(TurnResult):
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # a request the model cannot take (too long for the context, a grammar llama.cpp refused):
    # (message, code), answered as a 400; nothing was generated
    refused: tuple[str, str] | None = None
    # the calls the answer is (client tools): OpenAI's tool_calls, each with its JSON arguments
    tool_calls: list[dict[str, Any]] | None = None


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The client's conversation in ChatML (the Qwen template), ending with the assistant's turn.
    ChatML's control tokens in the client's text are written as text (``&lt;|im_start|>``)."""
    if messages[0].role != "system":
        messages = [ChatMessage("system", DEFAULT_SYSTEM), *messages]
    parts = []
    for m in messages:
        if m.role == "tool":
            parts.append(f"<|im_start|>user\n<tool_response>\n{as_text(m.content)}\n</tool_response>{END_OF_TURN}\n")
        else:
            parts.append(f"<|im_start|>{m.role}\n{as_text(m.content)}{END_OF_TURN}\n")
    return "".join(parts) + "<|im_start|>assistant\n"


def context_refusal(prompt_tokens: int, n_ctx: int, max_tokens: int | None) -> tuple[str, str] | None:
    wanted = prompt_tokens + (max_tokens or 1)
    if wanted <= n_ctx:
        return None
    asked = f" plus {max_tokens} to generate" if max_tokens else ""
    return (f"this model's context window is {n_ctx} tokens; the prompt is {prompt_tokens} tokens{asked}",
            "context_length_exceeded")


def completion(prompt: str, sampling: Sampling, *, schema: dict[str, Any] | None = None,
               stop: tuple[str, ...] = (), on_piece: Callable[[str], None] | None = None) -> Callable[..., Task]:
    """The program of a plain-model request: ``Kernel.submit(pid, "", program=completion(...))``."""

    def program(svc: TurnServices, proc: Process) -> Task:
        started = time.monotonic()
        prompt_tokens = len(svc.backend.tokenize(prompt))
        refusal = context_refusal(prompt_tokens, svc.backend.n_ctx, sampling.max_tokens)
        if refusal is not None:
            return _result(proc, "", started, prompt_tokens=prompt_tokens, refused=refusal)
        room = svc.backend.n_ctx - prompt_tokens
        params = SamplingParams(max_tokens=min(sampling.max_tokens or room, room), temperature=sampling.temperature,
                                top_p=sampling.top_p, stop=(*sampling.stop, *stop), seed=sampling.seed)
        try:
            text, stats = yield from generate(svc, proc, prompt, params, schema=schema, on_piece=on_piece)
        except GrammarError as exc:  # llama.cpp itself refused the grammar
            return _result(proc, "", started, prompt_tokens=prompt_tokens,
                           refused=(f"response_format: {exc}", "invalid_schema"))
        return _result(proc, text, started, finish_reason=stats.finish_reason or "stop",
                       prompt_tokens=stats.prompt_tokens, completion_tokens=stats.generated_tokens)

    return program


def os_history(messages: list[ChatMessage]) -> tuple[list[Message], str]:
    """For ``llmos``: the earlier messages as the process's history, and the request (the last
    user message). The OS's own boot prompt comes first; a client's system message follows it."""
    if messages[-1].role != "user":
        raise ValueError("the last message must be the user's")
    history = [Message(m.role, m.content) for m in messages[:-1] if m.role in ("system", "user", "assistant")]
    return history, messages[-1].content


def os_turn(text: str) -> Callable[..., Task]:
    """The program of an ``llmos`` request: the OS's turn, counted."""

    def program(svc: TurnServices, proc: Process) -> Task:
        result: TurnResult = yield from run_turn(svc, proc, text)
        answered = proc.messages[:-1] if proc.messages and proc.messages[-1].role == "assistant" else proc.messages
        prompt_tokens = len(svc.backend.tokenize(render(answered) + ANSWER_PREFIX))
        return Completion(result.answer, result.syscalls, result.stopped, result.timings, result.pid,
                          finish_reason="length" if result.timings.get("tokens", 0) >= svc.options.max_answer_tokens
                          else "stop",
                          prompt_tokens=prompt_tokens, completion_tokens=int(result.timings.get("tokens", 0)))

    return program


def _result(proc: Process, text: str, started: float, **usage: Any) -> Completion:
    return Completion(text, [], proc.stop_requested, {"total_s": round(time.monotonic() - started, 4)}, proc.pid,
                      **usage)
