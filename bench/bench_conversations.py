"""Long conversations: does the decision hold up at turn 30, and does any answer claim a device
result that did not happen?

Each conversation of ``bench/data/conversations_measure.json`` (5 of 32 mixed turns: arithmetic,
"remember ...", chat; written before any tuning) runs as one process of one kernel, with every
installed device, a fresh memory store and the disk pager, as ``llmos chat`` runs it. Per turn:

- **right call**: a turn that needs a device got that call (a chat got none);
- **false claim**: the answer presents a device result this turn did not produce: a "remembered" /
  "stored" / "saved" claim with no ``memory.remember`` call, or an id (12 hex digits) that none of
  this turn's calls returned (judged here, independently of ``kernel/syscalls/claims.py``);
- **head arithmetic**: an arithmetic turn answered with a number but no calculator call;
- afterwards, the store holds every fact the conversation asked to remember.

Call accuracy is reported per turn position (positions 1-8, 9-16, 17-24, 25-32) and overall, for
the kernel as configured ("after") and, with ``--before``, the old design (decision on the whole
conversation, no claim check).

    .venv/bin/python bench/bench_conversations.py                      # all 5, as configured
    .venv/bin/python bench/bench_conversations.py --before --only kitchen,office
    .venv/bin/python bench/bench_conversations.py --set tuning -v      # per-turn margins
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "data"
SETS = {"measure": HERE / "conversations_measure.json", "tuning": HERE / "conversations_tuning.json"}
BUCKET = 8  # turn positions per bucket in the per-position figures
MAX_ANSWER_TOKENS = 160  # chats are short; bounds a run's time when an answer runs on

FIGURES = ("conversation_calls_right", "conversation_calls_right_worst_position", "conversation_false_claims",
           "conversation_head_arithmetic", "conversation_facts_stored", "conversation_calls_right_before",
           "conversation_false_claims_before")

_CLAIMED_STORE = re.compile(r"(?<!not )(?<!n't )\b(remembered|stored|saved|noted it|i'll remember|i will remember)\b",
                            re.IGNORECASE)
_ID = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12}\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class TurnOutcome:
    position: int
    text: str
    expect: str | None
    calls: list[str]
    answer: str
    margins: list[tuple[str | None, float, float]]  # per round: (call, margin, bar)
    seconds: float
    value: str | None = None
    results: list[str] = field(default_factory=list)
    switched_tokens: int = 0  # tokens evaluated at this turn's context switches

    @property
    def right(self) -> bool:
        return (self.expect in self.calls) if self.expect else not self.calls

    @property
    def false_claim(self) -> bool:
        produced = " ".join(self.results)
        ids = [i for i in _ID.findall(self.answer) if i not in produced and i not in self.text]
        claimed_store = "memory.remember" not in self.calls and bool(_CLAIMED_STORE.search(self.answer))
        return bool(ids) or claimed_store

    @property
    def head_arithmetic(self) -> bool:
        if self.expect != "calculator.evaluate" or "calculator.evaluate" in self.calls:
            return False
        given = set(_NUMBER.findall(self.text))
        return any(n not in given for n in _NUMBER.findall(self.answer))

    @property
    def value_right(self) -> bool:
        numbers = {n.replace(",", "") for n in _NUMBER.findall(self.answer)}
        return self.value is not None and (self.value in numbers or f"{self.value}.0" in numbers)


@dataclass
class ConversationOutcome:
    id: str
    turns: list[TurnOutcome]
    facts_stored: int
    facts_asked: int
    seconds: float


def load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["conversations"]


def run_conversation(backend: Any, conversation: dict[str, Any], options: Any, log: Any = None) -> ConversationOutcome:
    """One conversation as one process of a fresh kernel (fresh memory store, disk pager)."""
    from llmos.kernel import events
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry
    from llmos.memory.pager import DiskPager

    data = Path(tempfile.mkdtemp(prefix=f"llmos-bench-conv-{conversation['id']}-"))
    registry = DeviceRegistry.from_entry_points()
    registry.start(data)
    kernel = Kernel(backend, registry, options, pager=DiskPager(data / "devices" / "memory" / "chroma")).start()
    decided: list[events.Event] = []
    kernel.bus.subscribe(lambda e: decided.append(e) if isinstance(e, (events.SyscallDecided, events.ContextSwitched))
                         else None)
    outcomes: list[TurnOutcome] = []
    started = time.monotonic()
    try:
        kernel.wait_ready(1200)  # the calibration at load: minutes on a busy machine
        pid = kernel.spawn("chat")
        for position, turn in enumerate(conversation["turns"], start=1):
            decided.clear()
            t0 = time.monotonic()
            result = kernel.submit(pid, turn["text"]).result(600)
            outcome = TurnOutcome(
                position, turn["text"], turn["expect"], [f"{s['device']}.{s['call']}" for s in result.syscalls],
                result.answer, [(d.call, d.margin, d.threshold) for d in decided
                                if isinstance(d, events.SyscallDecided) and d.pid == pid],
                time.monotonic() - t0, turn.get("value"),
                [str(s["result"] if s["ok"] else s["error"]) for s in result.syscalls],
                sum(d.evaluated_tokens for d in decided if isinstance(d, events.ContextSwitched)))
            outcomes.append(outcome)
            if log is not None:
                log(describe(outcome))
        stored = facts_stored(kernel.dispatcher, conversation)
    finally:
        kernel.shutdown(close_backend=False)
        for info in kernel.processes():
            backend.release(int(info["pid"]))
        shutil.rmtree(data, ignore_errors=True)
    asked = sum(1 for t in conversation["turns"] if t["expect"] == "memory.remember")
    return ConversationOutcome(conversation["id"], outcomes, stored, asked, time.monotonic() - started)


def facts_stored(dispatcher: Any, conversation: dict[str, Any]) -> int:
    """How many of the facts asked to be remembered the store holds (asked through the memory device,
    called as the kernel calls it)."""
    facts = [t["fact"] for t in conversation["turns"] if t["expect"] == "memory.remember"]

    def recalled(words: list[str]) -> str:
        return str(dispatcher.call_blocking("memory.recall", {"query": " ".join(words), "limit": 3}).value)

    return sum(1 for words in facts if all(w.lower() in recalled(words).lower() for w in words))


def describe(t: TurnOutcome) -> str:
    rounds = "; ".join(f"{c or 'answer'} {m:+.2f}/{b:.2f}" for c, m, b in t.margins) or "-"
    flags = ("ok " if t.right else "BAD") + (" CLAIM" if t.false_claim else "") + (" HEAD" if t.head_arithmetic else "")
    return (f"{t.position:3} {flags:13} want {t.expect or 'answer':19} got {','.join(t.calls) or 'answer':19} "
            f"[{rounds}] {t.seconds:5.1f}s {t.switched_tokens:5}tok | {t.text[:44]!r} -> {t.answer[:70]!r}")


@dataclass
class Summary:
    right: int
    needing: int
    by_position: list[tuple[str, int, int]]  # (positions, right, needing a device)
    chats_right: int
    chats: int
    false_claims: int
    head_arithmetic: int
    values_right: int
    arithmetic: int
    facts_stored: int
    facts_asked: int
    seconds: float

    @property
    def worst_position(self) -> float:
        return min(100.0 * r / n for _, r, n in self.by_position if n)

    def line(self) -> str:
        buckets = ", ".join(f"{p}: {r}/{n}" for p, r, n in self.by_position)
        return (f"device turns right {self.right}/{self.needing} (by position {buckets}); chats without a call "
                f"{self.chats_right}/{self.chats}; false claims {self.false_claims}; head arithmetic "
                f"{self.head_arithmetic}; exact values {self.values_right}/{self.arithmetic}; facts stored "
                f"{self.facts_stored}/{self.facts_asked}; {self.seconds:.0f} s")


def summarise(outcomes: list[ConversationOutcome]) -> Summary:
    turns = [t for c in outcomes for t in c.turns]
    device = [t for t in turns if t.expect]
    last = max((t.position for t in turns), default=0)
    buckets = []
    for start in range(1, last + 1, BUCKET):
        inside = [t for t in device if start <= t.position < start + BUCKET]
        buckets.append((f"{start}-{min(start + BUCKET - 1, last)}", sum(t.right for t in inside), len(inside)))
    chats = [t for t in turns if not t.expect]
    arithmetic = [t for t in turns if t.expect == "calculator.evaluate"]
    return Summary(sum(t.right for t in device), len(device), buckets, sum(t.right for t in chats), len(chats),
                   sum(t.false_claim for t in turns), sum(t.head_arithmetic for t in turns),
                   sum(t.value_right for t in arithmetic), len(arithmetic),
                   sum(c.facts_stored for c in outcomes), sum(c.facts_asked for c in outcomes),
                   sum(c.seconds for c in outcomes))


def before_options(options: Any) -> Any:
    """The design measured in issue 13: the decision reads the whole conversation, no claim check."""
    from dataclasses import replace

    return replace(options, decision_context="conversation", check_claims=False)


def measure(backend: Any, conversations: list[dict[str, Any]], options: Any, log: Any = None) -> Summary:
    outcomes = []
    for conversation in conversations:
        if log is not None:
            log(f"conversation {conversation['id']} ({len(conversation['turns'])} turns)")
        outcomes.append(run_conversation(backend, conversation, options, log))
    return summarise(outcomes)


def run(ctx: Any) -> list[dict[str, Any]]:
    from llmos.kernel.turn import TurnOptions

    conversations = load(SETS["measure"])
    options = TurnOptions(max_answer_tokens=MAX_ANSWER_TOKENS)
    ctx.log(f"conversations: {len(conversations)} of {[len(c['turns']) for c in conversations]} turns, as configured")
    after = measure(ctx.backend(), conversations, options, ctx.log if not ctx.quick else None)
    figures = [
        {"name": "conversation_calls_right", "value": round(100.0 * after.right / after.needing, 1), "unit": "%",
         "goal": ">= 90", "detail": after.line()},
        {"name": "conversation_calls_right_worst_position", "value": round(after.worst_position, 1), "unit": "%",
         "goal": ">= 90", "detail": f"the worst bucket of {BUCKET} turn positions"},
        {"name": "conversation_false_claims", "value": after.false_claims, "unit": "answers", "goal": "== 0",
         "detail": "answers presenting a device result the turn did not produce"},
        {"name": "conversation_head_arithmetic", "value": after.head_arithmetic, "unit": "answers", "goal": None,
         "detail": "arithmetic answered with a number and no calculator call"},
        {"name": "conversation_facts_stored", "value": after.facts_stored, "unit": f"/{after.facts_asked}",
         "goal": None, "detail": "facts the store holds after the conversations"},
    ]
    if not ctx.quick and (ctx.wants("conversation_calls_right_before") or ctx.wants("conversation_false_claims_before")):
        ctx.log("conversations: the design before (decision on the whole conversation, no claim check)")
        before = measure(ctx.backend(), conversations, before_options(options))
        figures += [
            {"name": "conversation_calls_right_before", "value": round(100.0 * before.right / before.needing, 1),
             "unit": "%", "goal": None, "detail": before.line()},
            {"name": "conversation_false_claims_before", "value": before.false_claims, "unit": "answers",
             "goal": None, "detail": "the same judge, the design before"},
        ]
    return figures


def main() -> int:
    from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions
    from llmos.kernel.model_file import default_model_path
    from llmos.kernel.turn import TurnOptions

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), default="measure")
    parser.add_argument("--only", help="comma-separated conversation ids")
    parser.add_argument("--before", action="store_true", help="the design before: whole-conversation decision, no check")
    parser.add_argument("--context", help="decision_context to use (overrides --before's)")
    parser.add_argument("--no-claims", action="store_true", help="no claim check")
    parser.add_argument("--turns", type=int, default=0, help="only the first N turns of each conversation")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: every core)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per turn")
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="llmos-bench-data-")  # never the user's config or data directory
    os.environ["LLMOS_DATA_DIR"] = data
    os.environ["LLMOS_CONFIG"] = str(Path(data) / "no-config.toml")
    conversations = load(SETS[args.set])
    if args.only:
        conversations = [c for c in conversations if c["id"] in args.only.split(",")]
    if args.turns:
        conversations = [{**c, "turns": c["turns"][: args.turns]} for c in conversations]
    options = TurnOptions(max_answer_tokens=MAX_ANSWER_TOKENS)
    if args.before:
        options = before_options(options)
    if args.context:
        from dataclasses import replace

        options = replace(options, decision_context=args.context)
    if args.no_claims:
        from dataclasses import replace

        options = replace(options, check_claims=False)
    threads = {"n_threads": args.threads} if args.threads else {}
    backend = LlamaCppBackend(LlamaOptions(default_model_path(), n_ctx=8192, **threads))
    backend.load()
    log = (lambda line: print(line, flush=True)) if args.verbose else None
    print(measure(backend, conversations, options, log).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
