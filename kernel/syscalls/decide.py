"""Deciding whether the model calls a device this round, and which one.

Measured on the 0.5B embedded model (../shared/ASSETS.md, and ``bench/bench_decisions.py``
here): under a JSON grammar the model always calls; left free it writes broken calls. What works
is to compare how likely the model is to start its reply with ``CALL <device.call>`` versus
``ANSWER:``, after the boot prompt and its example turns.

Raw likelihoods carry the examples' habits (the 0.5B model likes the calculator whatever is
asked), so each score is *calibrated*: the score the same continuation gets after a content-free
request (``N/A``, empty, ``[MASK]``) is subtracted ("contextual calibration", Zhao et al. 2021).
The call is the one the model itself finds most likely (raw scores: calibration blurs the choice
between devices); the margin is that call's calibrated score minus the calibrated ``ANSWER:``
score, and the kernel calls when it exceeds a threshold tuned for the boot prompt. The arguments
are generated afterwards under the call's grammar.

Measured (``make bench``): 37/40 on ../shared/data/tool-decisions.json (10/10 of the no-tool
cases), 22/25 on the held-out bench/data/decisions_heldout.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.base import Backend
from ..prompt import ANSWER_PREFIX, CALL_PREFIX

log = logging.getLogger(__name__)

# Tuned with `python bench/bench_decisions.py --calibrate` on the embedded model and the built-in
# boot prompt; re-tune when either changes (config key `decision_threshold`).
DEFAULT_THRESHOLD = 2.6

# pid under which the kernel scores its own calibration prompts
CALIBRATION_PID = 0


@dataclass(frozen=True)
class Decision:
    call: str | None  # "device.call", or None to answer
    margin: float  # calibrated log P(CALL best) - calibrated log P(ANSWER:), in nats
    best: str | None  # the most likely call, whether or not it was chosen
    threshold: float


def continuations(call_names: list[str]) -> list[str]:
    return [ANSWER_PREFIX] + [f"{CALL_PREFIX} {name}" for name in call_names]


@dataclass
class Calibration:
    """Baseline scores per boot prompt, computed once and reused for every decision.

    With ``store`` set, baselines are also kept on disk, keyed by the model file (path, size,
    mtime) and the exact prompts, so a restart does not score them again.
    """

    null_prompts: Callable[[], list[str]]
    store: Path | None = None
    _cache: dict[tuple[str, ...], list[float]] = field(default_factory=dict)

    def _disk_key(self, backend: Backend, prompts: list[str], conts: list[str]) -> str:
        model = Path(backend.model)
        stamp = f"{model.stat().st_size}:{model.stat().st_mtime_ns}" if model.is_file() else ""
        blob = json.dumps([backend.name, backend.model, stamp, prompts, conts])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _load(self) -> dict[str, list[float]]:
        try:
            data = json.loads(self.store.read_text()) if self.store and self.store.is_file() else {}
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # a damaged cache is only a cache: score again

    def baseline(self, backend: Backend, call_names: list[str]) -> list[float]:
        key = tuple(call_names)
        if key in self._cache:
            return self._cache[key]
        conts = continuations(call_names)
        prompts = self.null_prompts()
        disk_key = self._disk_key(backend, prompts, conts)
        saved = self._load()
        if isinstance(saved.get(disk_key), list) and len(saved[disk_key]) == len(conts):
            self._cache[key] = [float(v) for v in saved[disk_key]]
            return self._cache[key]
        rows = [backend.score(CALIBRATION_PID, p, conts) for p in prompts]
        backend.release(CALIBRATION_PID)
        self._cache[key] = [sum(col) / len(rows) for col in zip(*rows)]
        if self.store is not None:
            try:
                saved[disk_key] = self._cache[key]
                self.store.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.store.with_suffix(".tmp")
                tmp.write_text(json.dumps(saved))
                tmp.replace(self.store)
            except OSError as exc:
                log.warning("could not keep the decision calibration in %s: %s", self.store, exc)
        return self._cache[key]


def decide(
    backend: Backend,
    pid: int,
    prompt: str,
    call_names: list[str],
    threshold: float,
    calibration: Calibration | None = None,
) -> Decision:
    """Score ``ANSWER:`` against ``CALL <name>`` for every call after ``prompt``."""
    if not call_names:
        return Decision(None, -math.inf, None, threshold)
    raw = backend.score(pid, prompt, continuations(call_names))
    # Which call: the model's own preference. Whether to call: the calibrated margin of that call.
    best_index = max(range(1, len(raw)), key=raw.__getitem__)
    base = calibration.baseline(backend, call_names) if calibration is not None else [0.0] * len(raw)
    margin = (raw[best_index] - base[best_index]) - (raw[0] - base[0])
    best = call_names[best_index - 1]
    return Decision(best if margin > threshold else None, margin, best, threshold)
