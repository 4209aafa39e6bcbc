"""Kernel foundation benchmarks: generation overhead, KV snapshot restore, TTFT as a chat grows.

- ``generation_ratio``: tokens/s of the answer generated through ``kernel.submit`` over tokens/s
  of a plain ``llama_cpp.Llama.generate`` loop on the same prompt (goal >= 0.97).
- ``kv_restore_speedup``: making the context hold a ~1,500-token process again after another
  process used it: re-prefill time over KV-snapshot-restore time (goal >= 10).
- ``ttft_turn20_vs_turn2``: in one 20-turn conversation, time to first token of turn 20 over
  that of turn 2 (goal <= 1.2).

Timing the kernel: tokens are stamped where they are sampled, not where the kernel hands text
out (``TurnResult.timings`` stamps pieces as they reach observers, which a held-back stop-string
prefix or a change in how the kernel batches its output would shift). The kernel runs on
:class:`StreamRecorder`, a transparent wrapper of the shared backend that keeps the streams the
kernel opens: ``LocalStream.stats.first_token_at`` is stamped at the first sample, and the wrapper
stamps the end of each ``next()`` that produced tokens. The kernel's own figures are in the
details for comparison.

Run alone: ``.venv/bin/python bench/run.py --only kernel`` (or ``--only kv_restore`` etc).
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmos.kernel.backends.base import SamplingParams
from llmos.kernel.backends.llamacpp import LlamaCppBackend
from llmos.kernel.process import Message
from llmos.kernel.prompt import ANSWER_PREFIX, render
from llmos.kernel.prose import Prose
from llmos.kernel.turn import TurnOptions, boot_messages

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = ("generation_ratio", "kv_restore_speedup", "ttft_turn20_vs_turn2")

GENERATION_TOKENS = 128
# Asks for an answer longer than GENERATION_TOKENS.
GENERATION_REQUEST = "Count from 1 to 100, separated by commas."

RESTORE_TOKENS = 1500
# Process ids for the backend-level measurements: far above any kernel pid.
PID_LONG, PID_OTHER, PID_STREAM = 900_001, 900_002, 900_003

TTFT_TURNS = 20
TTFT_ANSWER_TOKENS = 24
# Short requests the embedded model answers without a device (their decision margins are well
# below the threshold). Turns 2 and 20 are the same kind of request.
CHAT_TURNS: tuple[str, ...] = (
    "Give me a synonym for happy.",
    "Name a primary color.",
    "What is the opposite of cold?",
    "Give me a synonym for sad.",
    "What is the chemical symbol for gold?",
    "What language is spoken in Brazil?",
    "Give me a synonym for fast.",
    "What is the opposite of day?",
    "Name a warm color.",
    "What is the chemical symbol for iron?",
    "Give me a synonym for big.",
    "What is the opposite of hot?",
    "Give me a synonym for smart.",
    "What is the chemical symbol for silver?",
    "Name a cool color.",
    "What language is spoken in Mexico?",
    "Give me a synonym for angry.",
    "What is the opposite of light?",
    "Give me an antonym for big.",
    "Name a secondary color.",
)


# --- a transparent backend wrapper that times the streams the kernel opens ----------------------


class TimedStream:
    """A backend stream with the time its last token was produced (``stats.first_token_at``
    is stamped by the stream itself at the first sample)."""

    def __init__(self, inner: Any, pid: int, prompt: str) -> None:
        self.inner = inner
        self.pid = pid
        self.prompt = prompt
        self.last_token_at: float | None = None

    @property
    def stats(self) -> Any:
        return self.inner.stats

    @property
    def finished(self) -> bool:
        return bool(self.inner.finished)

    def next(self, max_tokens: int) -> list[str]:
        before = self.inner.stats.generated_tokens
        pieces: list[str] = self.inner.next(max_tokens)
        if self.inner.stats.generated_tokens > before:
            self.last_token_at = time.monotonic()
        return pieces

    def close(self) -> None:
        self.inner.close()

    @property
    def is_answer(self) -> bool:
        return self.prompt.endswith(ANSWER_PREFIX)

    def generation_rate(self) -> float:
        """Tokens per second from the first sampled token to the last (prefill excluded)."""
        first, last, n = self.stats.first_token_at, self.last_token_at, self.stats.generated_tokens
        if first is None or last is None or n < 2 or last <= first:
            raise RuntimeError(f"stream produced too few tokens to time ({n})")
        return (n - 1) / (last - first)


class StreamRecorder:
    """Delegates everything to ``inner`` (attribute writes too, e.g. the kernel's ``on_switch``)
    and keeps every stream opened through it."""

    def __init__(self, inner: LlamaCppBackend) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "streams", [])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def open(self, pid: int, prompt: str, params: SamplingParams, json_schema: dict[str, Any] | None = None) -> TimedStream:
        stream = TimedStream(self._inner.open(pid, prompt, params, json_schema), pid, prompt)
        self.streams.append(stream)
        return stream

    def answer_stream_since(self, index: int) -> TimedStream:
        """The last answer stream opened after ``streams[index]``."""
        answers = [s for s in self.streams[index:] if s.is_answer]
        if not answers:
            raise RuntimeError("the turn opened no answer stream")
        return answers[-1]


# --- small helpers ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_list(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    return "[" + ", ".join(f"{v * scale:.{digits}f}" for v in values) + "]"


def interleaved(reps: int, arms: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every arm ``reps`` times, one repetition of each after the other, reversing the order
    every other repetition (ABBA...), so that drifting machine load falls on all arms alike."""
    values: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(reps):
        order = list(arms) if i % 2 == 0 else list(reversed(arms))
        for name in order:
            values[name].append(arms[name]())
    return values


# --- a. generation rate: kernel vs plain llama-cpp-python -------------------------------------


@dataclass
class RawRun:
    rate: float
    tokens: list[int]


def raw_generate(llm: Any, prompt_tokens: list[int], n: int) -> RawRun:
    """``n`` tokens greedily with ``Llama.generate`` (the bare sample/eval loop, as the kernel's
    sampler: greedy after the same penalty stage); tokens/s from the first token to the last."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out: list[int] = []
    first = last = 0.0
    generator = llm.generate(prompt_tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0)
    for tok in generator:
        now = time.monotonic()
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        if not out:
            first = now
        last = now
        out.append(tok)
        if len(out) >= n:
            break
    generator.close()
    if len(out) < 2 or last <= first:
        raise RuntimeError(f"raw generation produced {len(out)} tokens")
    return RawRun((len(out) - 1) / (last - first), out)


def generation_ratio(ctx: "BenchContext") -> dict[str, Any]:
    backend = ctx.backend()
    raw = ctx.raw_llama()
    reps = ctx.reps(7, 3)
    recorder = StreamRecorder(backend)
    # max_rounds=0: the turn answers at once, without the device decision (it comes before the first
    # answer token, so it would not be timed anyway); the figure then does not depend on how the
    # decision threshold is calibrated. The answer runs through the kernel's slices as usual.
    options = TurnOptions(max_answer_tokens=GENERATION_TOKENS, prose=Prose.greedy(), max_rounds=0)
    kernel_reported: list[float] = []
    tokens: dict[str, list[int]] = {"raw": [], "kernel": [], "stream": []}
    texts: dict[str, str] = {}
    with ctx.kernel(options, backend=recorder) as kernel:

        def kernel_run() -> float:
            pid = kernel.spawn("bench-generation")
            index = len(recorder.streams)
            result = kernel.submit(pid, GENERATION_REQUEST).result(timeout=900)
            # (no kernel.kill here: it would release the pid on the kernel thread while this thread
            # drives the backend in stream_run; ctx.kernel() releases the pids at the end)
            if result.syscalls:
                raise RuntimeError(f"the kernel called a device: {result.syscalls}")
            stream = recorder.answer_stream_since(index)
            kernel_reported.append(float(result.timings["tokens_per_s"]))
            tokens["kernel"].append(stream.stats.generated_tokens)
            texts["kernel"] = result.answer
            return stream.generation_rate()

        # Warm-up, and the exact prompt the kernel answers after, for the other arms.
        kernel_run()
        prompt = recorder.answer_stream_since(0).prompt
        prompt_tokens = backend.tokenize(prompt)

        def raw_run() -> float:
            run = raw_generate(raw, prompt_tokens, GENERATION_TOKENS)
            tokens["raw"].append(len(run.tokens))
            texts["raw"] = backend.detokenize(run.tokens).strip()
            return run.rate

        def stream_run() -> float:
            """The backend's LocalStream on this thread, without the kernel: splits the kernel's
            overhead into the backend's (sampling, detokenizing, stop strings) and the loop's."""
            params = SamplingParams(max_tokens=GENERATION_TOKENS, temperature=0.0, stop=("<|im_end|>",))
            stream = TimedStream(backend.open(PID_STREAM, prompt, params), PID_STREAM, prompt)
            pieces: list[str] = []
            try:
                while not stream.finished:
                    pieces += stream.next(options.slice_tokens)
            finally:
                stream.close()
                backend.release(PID_STREAM)
            tokens["stream"].append(stream.stats.generated_tokens)
            texts["stream"] = "".join(pieces).strip()
            return stream.generation_rate()

        arms = {"raw": raw_run, "kernel": kernel_run, "stream": stream_run}
        for warm_up in (raw_run, stream_run):
            warm_up()
        kernel_reported.clear()
        for counts in tokens.values():
            counts.clear()
        ctx.log(f"generation_ratio: {reps} interleaved rounds of {GENERATION_TOKENS} tokens (raw, kernel, stream)")
        rates = interleaved(reps, arms)
    ratios = [k / r for k, r in zip(rates["kernel"], rates["raw"])]
    stream_ratios = [s / r for s, r in zip(rates["stream"], rates["raw"])]
    same_text = len(set(texts.values())) == 1
    detail = (
        f"median of {reps} per-round ratios kernel/raw (order reversed every other round); tokens/s from "
        f"the first to the last sampled token (prefill excluded), {ctx.n_threads} threads, greedy, same "
        f"{len(prompt_tokens)}-token prompt (the kernel's answer prompt). raw = llama_cpp.Llama.generate: "
        f"tok/s {fmt_list(rates['raw'])} median {median(rates['raw']):.1f}; kernel = kernel.submit on a new "
        f"process (slices of {options.slice_tokens}): tok/s {fmt_list(rates['kernel'])} median "
        f"{median(rates['kernel']):.1f}; ratios {fmt_list(ratios, digits=3)}, ratio of medians "
        f"{median(rates['kernel']) / median(rates['raw']):.3f}. For diagnosis, backend LocalStream without "
        f"the kernel: tok/s {fmt_list(rates['stream'])}, median ratio to raw {median(stream_ratios):.3f}. "
        f"Tokens per run: raw {sorted(set(tokens['raw']))}, kernel {sorted(set(tokens['kernel']))}, "
        f"stream {sorted(set(tokens['stream']))}; same text in all arms: {same_text}. "
        f"Kernel-reported timings.tokens_per_s median {median(kernel_reported):.1f}"
    )
    return {"name": "generation_ratio", "value": median(ratios), "unit": "x", "goal": ">= 0.97", "detail": detail}


# --- b. KV snapshot restore vs re-prefill -------------------------------------------------------


def long_context_tokens(backend: LlamaCppBackend, registry: Any, n: int) -> list[int]:
    """A chat process's context of exactly ``n`` tokens: the boot prompt, then a long conversation."""
    messages = list(boot_messages(registry))
    topics = ("the tides", "lighthouses", "sea birds", "old ships", "storms", "coral reefs", "whales", "maps")
    i = 0
    while len(backend.tokenize(render(messages))) < n:
        topic = topics[i % len(topics)]
        messages.append(Message("user", f"Question {i + 1}: tell me something about {topic}."))
        messages.append(Message("assistant", (
            f"Here is note {i + 1} on {topic}. People have studied {topic} for centuries, keeping "
            f"logs, drawing charts and passing stories on; each generation added what it saw, and "
            f"the records of {topic} now fill libraries by the sea."
        )))
        i += 1
    return backend.tokenize(render(messages))[:n]


def kv_restore_speedup(ctx: "BenchContext") -> dict[str, Any]:
    from llmos.kernel.backends.base import SwitchInfo

    backend = ctx.backend()
    reps = ctx.reps(7, 3)
    long = long_context_tokens(backend, ctx.registry(), RESTORE_TOKENS)
    # Another process: a short chat sharing no prefix with the long one (not even the boot prompt).
    other = backend.tokenize("<|im_start|>user\nWhat is the weather like on the moon?<|im_end|>\n" * 4
                             + "<|im_start|>assistant\n")
    switches: list[SwitchInfo] = []
    saved_hook = backend.on_switch
    backend.on_switch = switches.append

    def timed_switch_to_long(expected: str) -> float:
        switches.clear()
        started = time.perf_counter()
        backend.ensure(PID_LONG, long)
        seconds = time.perf_counter() - started
        info = next((s for s in switches if s.pid == PID_LONG), None)
        if info is None or info.method != expected:
            raise RuntimeError(f"expected a {expected} switch to the long process, got {info}")
        return seconds

    def prefill() -> float:
        backend.release(PID_LONG)  # no snapshot: the long process must be evaluated again
        backend.ensure(PID_OTHER, other)
        return timed_switch_to_long("prefill")

    def restore() -> float:
        backend.ensure(PID_OTHER, other)  # switching away saves the long process's snapshot
        return timed_switch_to_long("snapshot")

    try:
        backend.ensure(PID_LONG, long)  # warm-up
        restore()
        ctx.log(f"kv_restore_speedup: {reps} interleaved pairs, {len(long)}-token context")
        times = interleaved(reps, {"prefill": prefill, "restore": restore})
        prefill_s, restore_s = times["prefill"], times["restore"]
        snapshot_mb = _snapshot_mb(backend, PID_LONG)
    finally:
        backend.on_switch = saved_hook
        backend.release(PID_LONG)
        backend.release(PID_OTHER)
    value = median(prefill_s) / median(restore_s)
    ratios = [p / r for p, r in zip(prefill_s, restore_s)]
    detail = (
        f"ratio of medians over {reps} interleaved pairs: backend.ensure(pid, {len(long)} tokens) after a "
        f"{len(other)}-token process used the context; each switch also saves the outgoing short "
        f"process's snapshot. prefill s {fmt_list(prefill_s, digits=3)} median {median(prefill_s):.3f} "
        f"({len(long) / median(prefill_s):.0f} tok/s); snapshot restore (+ re-evaluating the last token) "
        f"ms {fmt_list(restore_s, 1000)} median {median(restore_s) * 1000:.1f}; per-pair ratios "
        f"{fmt_list(ratios)}; snapshot size {snapshot_mb}"
    )
    return {"name": "kv_restore_speedup", "value": value, "unit": "x", "goal": ">= 10", "detail": detail}


def _snapshot_mb(backend: LlamaCppBackend, pid: int) -> str:
    """The size of ``pid``'s saved KV state, read from the backend's private table if it has one."""
    snapshots = getattr(backend, "_snapshots", None)
    snap = snapshots.get(pid) if isinstance(snapshots, dict) else None
    size = getattr(snap, "size", None)
    return f"{size / 2**20:.1f} MB" if isinstance(size, int) else "unknown"


# --- c. TTFT at turn 20 vs turn 2 ---------------------------------------------------------------


@dataclass
class TurnFigures:
    ttft: float  # submit -> first answer token sampled
    kernel_ttft: float  # TurnResult.timings["ttft_s"]
    prompt_tokens: int
    answer_tokens: int
    calls: int


def conversation(ctx: "BenchContext", turns: Sequence[str]) -> list[TurnFigures]:
    """One kernel process, one turn after another; figures of every turn."""
    recorder = StreamRecorder(ctx.backend())
    options = TurnOptions(max_answer_tokens=TTFT_ANSWER_TOKENS, prose=Prose.greedy())
    figures: list[TurnFigures] = []
    with ctx.kernel(options, backend=recorder) as kernel:
        pid = kernel.spawn("bench-chat")
        for text in turns:
            index = len(recorder.streams)
            submitted = time.monotonic()
            result = kernel.submit(pid, text).result(timeout=600)
            stream = recorder.answer_stream_since(index)
            if stream.stats.first_token_at is None:
                raise RuntimeError(f"no answer token for {text!r}")
            figures.append(TurnFigures(
                ttft=stream.stats.first_token_at - submitted,
                kernel_ttft=float(result.timings["ttft_s"]),
                prompt_tokens=stream.stats.prompt_tokens,
                answer_tokens=stream.stats.generated_tokens,
                calls=len(result.syscalls),
            ))
    return figures


def ttft_turn20_vs_turn2(ctx: "BenchContext") -> dict[str, Any]:
    reps = ctx.reps(3, 1)
    turns = CHAT_TURNS[:TTFT_TURNS]
    runs: list[list[TurnFigures]] = []
    for rep in range(reps):
        ctx.log(f"ttft_turn20_vs_turn2: conversation {rep + 1}/{reps} of {len(turns)} turns")
        runs.append(conversation(ctx, turns))
    last = len(turns) - 1
    ratios = [run[last].ttft / run[1].ttft for run in runs]
    kernel_ratios = [run[last].kernel_ttft / run[1].kernel_ttft for run in runs]
    per_turn = [median([run[t].ttft for run in runs]) for t in range(len(turns))]
    early, late = median(per_turn[1:4]), median(per_turn[last - 2:last + 1])
    first = runs[0]
    called = [t + 1 for t in (1, last) if any(r[t].calls for r in runs)]
    warning = f"WARNING: turn(s) {called} called a device, their ttft includes the call. " if called else ""
    detail = warning + (
        f"median over {reps} conversation(s) of ttft(turn {len(turns)}) / ttft(turn 2); ttft = submit -> "
        f"first answer token sampled, answers capped at {TTFT_ANSWER_TOKENS} tokens. "
        f"turn 2 ms {fmt_list([r[1].ttft for r in runs], 1000)}, turn {len(turns)} ms "
        f"{fmt_list([r[last].ttft for r in runs], 1000)}, ratios {fmt_list(ratios, digits=3)}; "
        f"per-turn median ms {fmt_list(per_turn, 1000, 0)}; median(turns {len(turns) - 2}-{len(turns)}) / "
        f"median(turns 2-4) = {late / early:.3f}; answer prompt {first[1].prompt_tokens} tokens at turn 2, "
        f"{first[last].prompt_tokens} at turn {len(turns)}; device calls per turn "
        f"{[sum(r[t].calls for r in runs) for t in range(len(turns))]}; kernel-reported ttft_s "
        f"turn 2 {fmt_list([r[1].kernel_ttft for r in runs], 1000)} ms, "
        f"turn {len(turns)} {fmt_list([r[last].kernel_ttft for r in runs], 1000)} ms, ratio median "
        f"{median(kernel_ratios):.3f}; answer tokens turn 2 {[r[1].answer_tokens for r in runs]}, "
        f"turn {len(turns)} {[r[last].answer_tokens for r in runs]}"
    )
    return {"name": "ttft_turn20_vs_turn2", "value": median(ratios), "unit": "x", "goal": "<= 1.2", "detail": detail}


# --- entry point --------------------------------------------------------------------------------


class BenchmarkFailed(RuntimeError):
    """Some figures could not be measured; ``figures`` holds those that were (see bench/run.py)."""

    def __init__(self, message: str, figures: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.figures = figures


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    benches: dict[str, Callable[["BenchContext"], dict[str, Any]]] = {
        "generation_ratio": generation_ratio,
        "kv_restore_speedup": kv_restore_speedup,
        "ttft_turn20_vs_turn2": ttft_turn20_vs_turn2,
    }
    figures: list[dict[str, Any]] = []
    failures: list[str] = []
    for name, bench in benches.items():
        if not ctx.wants(name):
            continue
        try:
            figures.append(bench(ctx))
        except Exception as exc:  # go on with the others; the run still counts as crashed
            ctx.log(f"{name} failed:\n{traceback.format_exc()}")
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    if failures:
        raise BenchmarkFailed("; ".join(failures), figures)
    return figures
