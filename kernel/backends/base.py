"""The backend Protocol: what the kernel needs from a language model.

A backend runs one model. The kernel talks to it per process (``pid``): it opens a
:class:`Stream` for a prompt and pulls up to a slice of tokens at a time, so a long generation
can be set aside at a slice boundary and resumed later. A backend that holds a single context
(llama.cpp) switches that context between processes itself, saving and restoring KV state, and
reports each switch through ``on_switch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class BackendError(Exception):
    """The model cannot be used (file invalid, server unreachable). One-line message."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 40
    stop: tuple[str, ...] = ()
    seed: int = 0
    purpose: str = ""  # what the text is for, e.g. "calculator.evaluate's arguments" (breadcrumbs)
    min_p: float = 0.05  # with a temperature: drop tokens under this share of the best one's probability
    # Against loops, over the tokens this stream generates (never the prompt, so a device result
    # is still copied freely): a repetition penalty over the last ``repeat_last_n`` tokens
    # (1.0 = off), and DRY, which penalises extending a sequence that already occurred, more the
    # longer the repeat beyond ``dry_allowed_length`` tokens (multiplier 0 = off).
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2


@dataclass(frozen=True)
class SwitchInfo:
    """How the context came to hold a process's tokens."""

    pid: int
    previous: int | None
    method: str  # "prefix" (kept / extended), "snapshot" (KV restored), "prefill" (re-evaluated)
    reused_tokens: int
    evaluated_tokens: int
    seconds: float


@dataclass
class StreamStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    first_token_at: float | None = None
    finish_reason: str | None = None  # "stop", "length", "grammar"


@runtime_checkable
class Stream(Protocol):
    """A generation in progress. ``next()`` returns text pieces; ``[]`` once finished."""

    stats: StreamStats

    @property
    def finished(self) -> bool: ...

    def next(self, max_tokens: int) -> list[str]: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str
    n_ctx: int
    supports_scoring: bool
    on_switch: Callable[[SwitchInfo], None] | None

    def load(self) -> None:
        """Load the model (may take seconds). Raises BackendError with a one-line message."""

    def tokenize(self, text: str) -> list[int]: ...

    def open(self, pid: int, prompt: str, params: SamplingParams, json_schema: dict[str, Any] | None = None) -> Stream:
        """Start generating after ``prompt`` for process ``pid``; optionally constrained to a JSON schema."""

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        """Log-probability of each continuation after ``prompt`` (only if ``supports_scoring``)."""

    def release(self, pid: int) -> None:
        """Forget what is kept for ``pid`` (its KV snapshot)."""

    def close(self) -> None: ...


@dataclass
class ScoreTrie:
    """Continuations as a token trie, so shared prefixes are evaluated once when scoring."""

    children: dict[int, "ScoreTrie"] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)  # indexes of continuations ending here

    @classmethod
    def build(cls, token_lists: list[list[int]]) -> "ScoreTrie":
        root = cls()
        for index, tokens in enumerate(token_lists):
            node = root
            for tok in tokens:
                node = node.children.setdefault(tok, cls())
            node.ends.append(index)
        return root
