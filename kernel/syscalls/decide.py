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
    margin: float  # calibrated log P(CALL <device>) - calibrated log P(ANSWER:), in nats
    best: str | None  # the most likely call of the device, when the kernel calls
    threshold: float
    device: str | None = None  # the most likely device, whether or not it was called


def continuations(names: list[str]) -> list[str]:
    """``ANSWER:`` and ``CALL <name>`` for each device (or call) name."""
    return [ANSWER_PREFIX] + [f"{CALL_PREFIX} {name}" for name in names]


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

    def baseline(self, backend: Backend, names: list[str]) -> list[float]:
        """Mean scores of ``continuations(names)`` after the content-free requests."""
        key = tuple(names)
        if key in self._cache:
            return self._cache[key]
        conts = continuations(names)
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


def devices_of(call_names: list[str]) -> dict[str, list[str]]:
    """Qualified call names grouped by device, in the order the devices first appear."""
    grouped: dict[str, list[str]] = {}
    for name in call_names:
        grouped.setdefault(name.partition(".")[0], []).append(name)
    return grouped


def warm(calibration: Calibration, backend: Backend, call_names: list[str]) -> None:
    """Compute (or load) the baseline :func:`decide` will need for these calls, e.g. at boot."""
    if call_names:
        calibration.baseline(backend, list(devices_of(call_names)))


def decide(
    backend: Backend,
    pid: int,
    prompt: str,
    call_names: list[str],
    threshold: float,
    calibration: Calibration | None = None,
) -> Decision:
    """Two stages after ``prompt``: ``ANSWER:`` against ``CALL <device>``, then the call within it.

    Stage one scores only the device names, so a device with many calls is not split into many
    small chances against a device with one call (the browser's four calls lost to the
    calculator's one). Stage two runs only when the kernel calls, and only when the device has
    more than one call: it scores that device's calls and takes the most likely.
    """
    if not call_names:
        return Decision(None, -math.inf, None, threshold)
    grouped = devices_of(call_names)
    device_names = list(grouped)
    raw = backend.score(pid, prompt, continuations(device_names))
    # Which device: the model's own preference. Whether to call: its calibrated margin.
    best_index = max(range(1, len(raw)), key=raw.__getitem__)
    base = calibration.baseline(backend, device_names) if calibration is not None else [0.0] * len(raw)
    margin = (raw[best_index] - base[best_index]) - (raw[0] - base[0])
    device = device_names[best_index - 1]
    if margin <= threshold:
        return Decision(None, margin, None, threshold, device)
    calls = grouped[device]
    best = calls[0]
    if len(calls) > 1:
        within = backend.score(pid, prompt, [f"{CALL_PREFIX} {name}" for name in calls])
        best = calls[max(range(len(calls)), key=within.__getitem__)]
    return Decision(best, margin, best, threshold, device)
