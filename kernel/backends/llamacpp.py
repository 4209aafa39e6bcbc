"""The local backend: a GGUF model through llama-cpp-python, with context switching.

One llama.cpp context serves every process. The backend remembers which tokens the context
holds and, when another process needs the model, makes the context hold that process's tokens in
the cheapest way it knows:

- **prefix**: the context already starts with the process's tokens; only the new tail is evaluated
  (a follow-up turn evaluates just the new message);
- **snapshot**: the process's KV state was saved when it was switched out (raw
  ``llama_state_get_data``, a few ms); restore it and evaluate only what is new since;
- **prefill**: evaluate from the longest common prefix.

Sampling is done here token by token (not through ``Llama.generate``) so a generation can stop at
any slice boundary and resume after other processes have used the context.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import breadcrumb, crash_hooks
from ..model_file import ModelFileError, check_gguf
from ..syscalls.grammar import GrammarError, to_gbnf
from . import engine
from .base import BackendError, SamplingParams, ScoreTrie, StreamStats, SwitchInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlamaOptions:
    model_path: Path
    n_ctx: int = 8192
    n_threads: int | None = None
    n_batch: int = 512
    snapshot_budget_mb: int = 1024
    seed: int = 0


@dataclass
class _Snapshot:
    tokens: list[int]
    data: Any  # ctypes buffer
    size: int


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = float(np.max(logits))
    return logits - top - math.log(float(np.sum(np.exp(logits - top))))


class LlamaCppBackend:
    name = "llama.cpp"
    supports_scoring = True

    def __init__(self, options: LlamaOptions) -> None:
        self.options = options
        self.model = str(options.model_path)
        self.n_ctx = options.n_ctx
        self.on_switch: Callable[[SwitchInfo], None] | None = None
        self._llm: Any = None
        self._owner: int | None = None
        self._tokens: list[int] = []  # what the KV cache holds now
        self._logits_fresh = False  # do the context's logits belong to _tokens[-1]?
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self._released: set[int] = set()
        self.engine_path: str | None = None  # the engine path in use, once loaded
        self._grammars_ok: set[str] = set()  # grammars llama.cpp compiled once: not checked again
        self._unpenalised: np.ndarray | None = None  # tokens the repetition penalty skips

    # --- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        if self._llm is not None:
            return
        try:
            check_gguf(self.options.model_path)
        except ModelFileError as exc:
            raise BackendError(str(exc)) from None
        path = self._engine_path()
        threads = self.options.n_threads or max(1, os.cpu_count() or 1)
        loading = breadcrumb.activity(
            f"loading {self.options.model_path} with engine path {path.name}", native="llama.cpp",
            cause=f"a model file this llama.cpp cannot read (damaged, truncated or of a newer format), "
                  f"or engine path {path.name} does not suit this CPU")
        try:
            with loading:
                crash_hooks.reach("load")
                self._llm = engine.load_llama(
                    self.options.model_path,
                    extra_bufts=path.extra_bufts,
                    n_ctx=self.options.n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_batch=self.options.n_batch,
                    seed=self.options.seed,
                    logits_all=False,
                )
        except Exception as exc:  # llama.cpp says little: a ValueError "Failed to load model"
            raise BackendError(f"llama.cpp could not load {self.options.model_path}: {exc}") from None
        self.engine_path = path.name
        self.n_ctx = self._llm.n_ctx()
        self._eog = {self._llm.token_eos()}
        import llama_cpp as lc

        vocab = lc.llama_model_get_vocab(self._llm.model)
        self._is_eog = lambda tok: bool(lc.llama_vocab_is_eog(vocab, tok))
        self._vocab = vocab
        self._lc = lc

    def _engine_path(self) -> engine.EnginePath:
        """The engine path proven on this model and CPU (checked in a subprocess the first time)."""
        model = self.options.model_path
        choice = engine.choose(model, say=log.warning)
        if choice.path is None:
            crashed = [r for r in choice.results if r.error.startswith(("crashed", "hung"))]
            if not crashed:  # every path failed cleanly: the file, not the engine
                detail = choice.results[-1].error if choice.results else "no engine path is installed"
                raise BackendError(f"llama.cpp could not load {model}: {detail}")
            raise BackendError(
                f"llama.cpp {crashed[0].error.split(' (')[0]} on {model} with every engine path "
                f"({choice.summary().removeprefix('no engine path passed: ')}): "
                f"run `llmos doctor --model {model}`"
            )
        try:
            path = engine.path_named(choice.path)
            engine.activate(path)
        except engine.EngineError as exc:
            raise BackendError(str(exc)) from None
        return path

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        self._snapshots.clear()
        self._unpenalised = None  # another model may load next

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise BackendError("the model is not loaded")
        return self._llm

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens, special=False).decode("utf-8", errors="replace")

    # --- the context: what the KV cache holds ---------------------------------------------

    def _truncate(self, n: int) -> None:
        if n < len(self._tokens):
            self.llm._ctx.kv_cache_seq_rm(-1, n, -1)
            self._tokens = self._tokens[:n]
            self._logits_fresh = False
        self.llm.n_tokens = n

    def _eval(self, tokens: list[int]) -> None:
        if not tokens:
            return
        if len(self._tokens) + len(tokens) > self.n_ctx:
            raise BackendError(
                f"context full: {len(self._tokens) + len(tokens)} tokens do not fit in {self.n_ctx}"
            )
        self.llm.n_tokens = len(self._tokens)
        self.llm.eval(tokens)
        self._tokens.extend(tokens)
        self._logits_fresh = True

    def unpenalised(self) -> np.ndarray:
        """:func:`unpenalised_tokens` of the loaded model, computed at its first use."""
        if self._unpenalised is None:
            self._unpenalised = unpenalised_tokens(self.llm)
        return self._unpenalised

    def _logits(self) -> np.ndarray:
        ptr = self._lc.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()

    def save_snapshot(self, pid: int) -> None:
        """Save the context's KV state as ``pid``'s snapshot (raw llama.cpp state calls)."""
        lc, ctx = self._lc, self.llm.ctx
        size = lc.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * size)()
        written = lc.llama_state_get_data(ctx, buf, size)
        self._snapshots[pid] = _Snapshot(list(self._tokens), buf, written)
        self._snapshots.move_to_end(pid)
        budget = self.options.snapshot_budget_mb * 1024 * 1024
        while sum(s.size for s in self._snapshots.values()) > budget and len(self._snapshots) > 1:
            self._snapshots.popitem(last=False)

    def _restore_snapshot(self, snap: _Snapshot) -> None:
        self._lc.llama_state_set_data(self.llm.ctx, snap.data, snap.size)
        self._tokens = list(snap.tokens)
        self.llm.n_tokens = len(self._tokens)
        self.llm.input_ids[: len(self._tokens)] = self._tokens
        self._logits_fresh = False  # re-evaluate the last token rather than trust restored logits

    def ensure(self, pid: int, tokens: list[int]) -> None:
        """Make the context hold exactly ``tokens`` for ``pid``, with logits for the last one."""
        if not tokens:
            raise BackendError("empty prompt")
        if (  # the hot path of generation: nothing changed since the last token
            self._owner == pid and self._logits_fresh and len(self._tokens) == len(tokens)
            and self._tokens[-16:] == tokens[-16:]
        ):
            return
        start = time.monotonic()
        previous = self._owner
        if previous is not None and previous != pid and previous not in self._released and self._tokens:
            self.save_snapshot(previous)
        reused = _common_prefix(self._tokens, tokens)
        method = "prefix"
        snap = self._snapshots.get(pid)
        if (
            snap is not None
            and len(snap.tokens) > reused + 16
            and _common_prefix(snap.tokens, tokens) == len(snap.tokens)
        ):
            self._restore_snapshot(snap)
            reused, method = len(snap.tokens), "snapshot"
        elif previous != pid and reused < len(tokens) - 1:
            method = "prefill" if reused < len(self._tokens) else "prefix"
        if reused == len(tokens) and not (self._logits_fresh and len(self._tokens) == len(tokens)):
            reused -= 1  # logits for the last token are needed: evaluate it again
        self._truncate(reused)
        # The last token is always evaluated on its own, as every generated token is: then the
        # logits a process samples from do not depend on how its prompt was batched, and a
        # process restored after a switch continues exactly as if it had never been interrupted.
        if reused < len(tokens):
            self._eval(tokens[reused:-1])
            self._eval(tokens[-1:])
        self._owner = pid
        self._released.discard(pid)
        if previous != pid and self.on_switch is not None:
            self.on_switch(SwitchInfo(pid, previous, method, reused, len(tokens) - reused, time.monotonic() - start))

    def release(self, pid: int) -> None:
        self._snapshots.pop(pid, None)
        self._released.add(pid)
        if self._owner == pid:
            self._owner = None

    # --- generation and scoring -------------------------------------------------------------

    def compile_grammar(self, grammar: str) -> None:
        """Compile a GBNF grammar in llama.cpp and free it; GrammarError if llama.cpp refuses it.

        llama-cpp-python adds whatever ``llama_sampler_init_grammar`` returns to the sampler
        chain, NULL included, and the first sample then segfaults: so the NULL is checked here.
        """
        if grammar in self._grammars_ok:
            return
        lc = self._lc
        sampler = lc.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise GrammarError("llama.cpp refused its grammar (its reason is on stderr)")
        lc.llama_sampler_free(sampler)
        self._grammars_ok.add(grammar)

    def open(self, pid: int, prompt: str, params: SamplingParams, json_schema: dict[str, Any] | None = None) -> "LocalStream":
        grammar = None
        if json_schema is not None:
            from llama_cpp import LlamaGrammar

            text = to_gbnf(json_schema)  # GrammarError if llama.cpp's parser would refuse it
            what = params.purpose or "a JSON schema"
            with breadcrumb.activity(f"compiling the grammar of {what}", native="llama.cpp",
                                     cause=f"llama.cpp's grammar compiler on the JSON schema of {what}"):
                crash_hooks.reach("grammar")
                self.compile_grammar(text)  # and llama.cpp itself, before llama-cpp-python sees it
                grammar = LlamaGrammar.from_string(text, verbose=False)
        return LocalStream(self, pid, self.tokenize(prompt), params, grammar)

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        """Sum of token log-probabilities of each continuation after ``prompt``."""
        with self._running(f"scoring the next words for process {pid}"):
            return self._score(pid, prompt, continuations)

    def _running(self, doing: str) -> Any:
        """The breadcrumb of model work (``kernel/breadcrumb.py``): what a crash happened in."""
        return breadcrumb.activity(f"{doing} (engine path {self.engine_path})", native="llama.cpp",
                                   cause=f"engine path {self.engine_path} failing on this model and CPU")

    def _score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        tokens = self.tokenize(prompt)
        self.ensure(pid, tokens)
        base = len(tokens)
        pieces = [self.tokenize(c, add_bos=False) for c in continuations]
        scores = [0.0] * len(continuations)

        def walk(node: ScoreTrie, logprobs: np.ndarray, acc: float) -> None:
            for tok, child in node.children.items():
                lp = acc + float(logprobs[tok])
                for index in child.ends:
                    scores[index] = lp
                if child.children:
                    depth = len(self._tokens)
                    self._eval([tok])
                    walk(child, _log_softmax(self._logits()), lp)
                    self._truncate(depth)

        walk(ScoreTrie.build(pieces), _log_softmax(self._logits()), 0.0)
        self._truncate(base)
        return scores


# llama.cpp's defaults (a repeat does not run across these), and the digits: Qwen writes a number
# one digit a token, and with DRY on its own "7,000,000,007" came back as "7,000,000,017"
DRY_BREAKERS = ("\n", ":", '"', "*", *"0123456789")
DRY_LAST_N = 4096  # DRY looks this far back over what the stream generated
# A token the repetition penalty leaves alone: digits, punctuation and spaces (in the byte-level
# BPE spelling of the vocabulary: "Ġ" a space, "Ċ" a newline; "▁" in SentencePiece vocabularies).
# llama.cpp's penalty sampler has no such exception: with it "10000000" came back as "100,000,00".
_UNPENALISED = re.compile(r"[\sĠĊ▁\d.,:;%+\-*/=()^$€£#]*")


def unpenalised_tokens(llm: Any) -> np.ndarray:
    """A mask over the vocabulary of the tokens the repetition penalty skips (about 0.3 s, once)."""
    import llama_cpp

    vocab = llm._model.vocab
    texts = (llama_cpp.llama_vocab_get_text(vocab, i) or b"" for i in range(llm.n_vocab()))
    return np.fromiter((bool(_UNPENALISED.fullmatch(t.decode("utf-8", "replace"))) for t in texts), dtype=bool)


def penalise_repeats(logits: np.ndarray, generated: list[int], params: SamplingParams, skip: np.ndarray) -> None:
    """llama.cpp's repetition penalty, in place, on the last ``repeat_last_n`` generated tokens
    except those ``skip`` marks: a positive logit is divided by the penalty, a negative one multiplied."""
    ids = np.unique(np.asarray(generated[-params.repeat_last_n:], dtype=np.int64))
    ids = ids[~skip[ids]]
    if ids.size:
        chosen = logits[ids]
        logits[ids] = np.where(chosen > 0, chosen / params.repeat_penalty, chosen * params.repeat_penalty)


def sampler_chain(llm: Any, params: SamplingParams, grammar: Any) -> Any:
    """llama.cpp's sampler chain for ``params``: DRY against loops (only when asked for, on
    generated tokens: llama_sampler_sample accepts each sampled token, the prompt is never fed
    in), the grammar, then greedy at temperature 0, else top-k, top-p, min-p, the temperature and
    a seeded draw (the request's own seed, else the model's). The repetition penalty is applied to
    the logits before the chain runs (:func:`penalise_repeats`)."""
    from llama_cpp import _internals

    chain = _internals.LlamaSampler()
    if params.dry_multiplier > 0.0:
        chain.add_dry(llm._model, params.dry_multiplier, params.dry_base, params.dry_allowed_length, DRY_LAST_N,
                      list(DRY_BREAKERS))
    if grammar is not None:
        chain.add_grammar(llm._model, grammar)
    if params.temperature <= 0.0:
        chain.add_greedy()
    else:
        chain.add_top_k(params.top_k)
        chain.add_top_p(params.top_p, 1)
        chain.add_min_p(params.min_p, 1)
        chain.add_temp(params.temperature)
        chain.add_dist(params.seed or llm._seed)
    return chain


class LocalStream:
    def __init__(self, backend: LlamaCppBackend, pid: int, prompt_tokens: list[int],
                 params: SamplingParams, grammar: Any) -> None:
        self.backend = backend
        self.pid = pid
        self.params = params
        self.tokens = list(prompt_tokens)
        self.stats = StreamStats(prompt_tokens=len(prompt_tokens))
        self._sampler = sampler_chain(backend.llm, params, grammar)
        self._prompt_length = len(prompt_tokens)
        self._skip = backend.unpenalised() if params.repeat_penalty != 1.0 else None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""  # all text generated so far
        self._emitted = 0  # how much of _text has been handed out

    @property
    def finished(self) -> bool:
        return self.stats.finish_reason is not None

    def _held_back(self) -> int:
        """Characters at the end of the text that might start a stop string."""
        keep = 0
        for stop in self.params.stop:
            for k in range(min(len(stop) - 1, len(self._text)), 0, -1):
                if self._text.endswith(stop[:k]):
                    keep = max(keep, k)
                    break
        return keep

    def next(self, max_tokens: int) -> list[str]:
        if self.finished:
            return []
        with self.backend._running(f"decoding for process {self.pid}"):
            return self._next(max_tokens)

    def _next(self, max_tokens: int) -> list[str]:
        backend = self.backend
        backend.ensure(self.pid, self.tokens)
        pieces: list[str] = []
        for _ in range(max_tokens):
            crash_hooks.reach("decode")
            if self._skip is not None and len(self.tokens) > self._prompt_length:
                ptr = backend._lc.llama_get_logits_ith(backend.llm.ctx, -1)  # the chain reads these next
                penalise_repeats(np.ctypeslib.as_array(ptr, shape=(len(self._skip),)),
                                 self.tokens[self._prompt_length:], self.params, self._skip)
            tok = self._sampler.sample(backend.llm._ctx, -1)
            if self.stats.first_token_at is None:
                self.stats.first_token_at = time.monotonic()
            if backend._is_eog(tok):
                self.stats.finish_reason = "stop"
                break
            self.stats.generated_tokens += 1
            self._text += self._decoder.decode(backend.llm.detokenize([tok], prev_tokens=self.tokens))
            hit = next((s for s in self.params.stop if s in self._text[max(0, self._emitted - len(s)):]), None)
            if hit is not None:
                self._text = self._text[: self._text.index(hit, max(0, self._emitted - len(hit)))]
                self.stats.finish_reason = "stop"
            elif self.stats.generated_tokens >= self.params.max_tokens:
                self.stats.finish_reason = "length"
            if not self.finished:
                self.tokens.append(tok)
                backend._eval([tok])
            end = len(self._text) if self.finished else len(self._text) - self._held_back()
            if end > self._emitted:
                pieces.append(self._text[self._emitted:end])
                self._emitted = end
            if self.finished:
                break
        if self.finished and len(self._text) > self._emitted:
            pieces.append(self._text[self._emitted:])
            self._emitted = len(self._text)
        return pieces

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
