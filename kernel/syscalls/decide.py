"""Deciding whether the model calls a device this round, and which one.

Measured on the 0.5B embedded model (../shared/ASSETS.md, and ``bench/bench_decisions.py``
here): under a JSON grammar the model always calls; left free it writes broken calls. What works
is to compare how likely the model is to start its reply with ``CALL <device.call>`` versus
``ANSWER:``. The margin ``log P(CALL ...) - log P(ANSWER:)`` (summed over the calls) ranks the
requests well; the kernel calls when it exceeds a threshold calibrated for the boot prompt, and
picks the most likely call. The arguments are then generated under that call's grammar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..backends.base import Backend
from ..prompt import ANSWER_PREFIX, CALL_PREFIX

# Calibrated with `python bench/bench_decisions.py --calibrate` on the embedded model and the
# built-in boot prompt; re-calibrate when either changes (the config key `decision_threshold`).
DEFAULT_THRESHOLD = 2.0


@dataclass(frozen=True)
class Decision:
    call: str | None  # "device.call", or None to answer
    margin: float  # log P(call) - log P(answer), in nats
    best: str | None  # the most likely call, whether or not it was chosen
    threshold: float


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def decide(backend: Backend, pid: int, prompt: str, call_names: list[str], threshold: float) -> Decision:
    """Score ``ANSWER:`` against ``CALL <name>`` for every call after ``prompt``."""
    if not call_names:
        return Decision(None, -math.inf, None, threshold)
    continuations = [ANSWER_PREFIX] + [f"{CALL_PREFIX} {name}" for name in call_names]
    scores = backend.score(pid, prompt, continuations)
    answer, calls = scores[0], scores[1:]
    margin = _logsumexp(calls) - answer
    best = call_names[max(range(len(calls)), key=calls.__getitem__)]
    return Decision(best if margin > threshold else None, margin, best, threshold)
