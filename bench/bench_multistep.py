"""Multi-step word problems through the real kernel: does a problem that needs several steps get
them, and is the answer exact (issue 13, item 2)?

The set is ``bench/data/multistep.json``: 36 problems with exact answers, written before any
tuning and never tuned on: unit conversions that need a chain of multiplications ("how many
minutes are in 5 weeks?" = 50400), word problems with three quantities, percentages of totals,
and powers or rounding inside a chain. Each problem is asked in a new process of a kernel on the
shared model, every device installed, as ``llmos ask`` would.

- ``multistep_exact``: the share of answers holding the exact value (one of the answer's numbers,
  thousands separators dropped, equals it exactly). Goal from the issue: >= 0.8 in the default mode.
- ``multistep_seconds_per_problem``: the mean time of a turn (decisions, calls, answer).
- ``multistep_calls_per_problem``: the mean number of device calls a turn made;
  ``multistep_with_call``: the share of turns that made at least one call that succeeded.

Run alone: ``.venv/bin/python bench/run.py --only multistep``; ``--quick``: one problem of each
of three kinds (3 turns). On two shared cores a problem takes about half a minute to two minutes.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = (
    "multistep_exact",
    "multistep_seconds_per_problem",
    "multistep_calls_per_problem",
    "multistep_with_call",
)
DATA = Path(__file__).resolve().parent / "data" / "multistep.json"
QUICK_KINDS = ("units", "word", "percent")
TURN_TIMEOUT_S = 900.0

_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])-?\d+(?:\.\d+)?")


def load(path: Path = DATA) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["problems"]


def numbers(text: str) -> list[Fraction]:
    """The numbers an answer states, exactly ("50,400" is 50400; "3.5" is 7/2)."""
    return [Fraction(m.group().replace(",", "")) for m in _NUMBER.finditer(text)]


def exact(answer: str, expected: str) -> bool:
    return Fraction(expected) in numbers(answer)


def chosen(problems: list[dict[str, Any]], quick: bool) -> list[dict[str, Any]]:
    """Every problem, or under ``--quick`` the first of each of three kinds."""
    if not quick:
        return problems
    return [next(p for p in problems if p["kind"] == kind) for kind in QUICK_KINDS]


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    from llmos.kernel.turn import TurnOptions

    problems = chosen(load(), ctx.quick)
    right, seconds, calls, with_call = 0, [], [], 0
    by_kind: dict[str, list[int]] = {}
    with ctx.kernel(TurnOptions()) as kernel:
        for problem in problems:
            started = time.monotonic()
            result = kernel.ask(problem["q"]).result(TURN_TIMEOUT_S)
            seconds.append(time.monotonic() - started)
            ok = exact(result.answer, problem["answer"])
            right += ok
            by_kind.setdefault(problem["kind"], [0, 0])
            by_kind[problem["kind"]][0] += ok
            by_kind[problem["kind"]][1] += 1
            calls.append(len(result.syscalls))
            with_call += any(s["ok"] for s in result.syscalls)
            made = "; ".join(f"{s['call']}({json.dumps(s['arguments'])[:60]}) -> "
                             f"{s['result'] if s['ok'] else 'Error'}" for s in result.syscalls)
            ctx.log(f"{problem['id']}: {'right' if ok else 'WRONG'} ({problem['answer']}) in {seconds[-1]:.0f} s; "
                    f"calls: {made or 'none'}; answer: {result.answer[:100]!r}")
    n = len(problems)
    kinds = ", ".join(f"{kind} {r}/{t}" for kind, (r, t) in by_kind.items())
    return [
        {"name": "multistep_exact", "value": right / n, "unit": "share", "goal": ">= 0.8",
         "detail": f"{right}/{n} exact ({kinds}){' (--quick: 3 problems)' if ctx.quick else ''}"},
        {"name": "multistep_seconds_per_problem", "value": statistics.mean(seconds), "unit": "s", "goal": None,
         "detail": f"median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s over {n} problems"},
        {"name": "multistep_calls_per_problem", "value": statistics.mean(calls), "unit": "calls", "goal": None,
         "detail": f"{sum(c >= 2 for c in calls)}/{n} turns made two calls or more"},
        {"name": "multistep_with_call", "value": with_call / n, "unit": "share", "goal": None,
         "detail": f"{with_call}/{n} turns had a call that succeeded"},
    ]
