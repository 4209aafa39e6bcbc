"""Deciding whether the model calls a device this round, and which one.

Measured on the 0.5B embedded model (../shared/ASSETS.md, and ``bench/bench_decisions.py``
here): under a JSON grammar the model always calls; left free it writes broken calls. What works
is to compare how likely the model is to start its reply one way or another, after the boot
prompt and its example turns. In two stages:

1. ``ANSWER:`` against ``CALL <device>`` for every device. The device is the one the model finds
   most likely, less half of its habit (``PRIOR_WEIGHT`` of the content-free score, see below).
   Whether to call it: the *calibrated* margin, its score minus
   the score ``ANSWER:`` gets, each less the score the same continuation gets after content-free
   requests (``N/A``, empty, ``[MASK]``; "contextual calibration", Zhao et al. 2021), must pass
   the device's bar.
2. Only when calling a device with several calls: ``CALL <device.call>`` for its calls; the most
   likely is taken.

Scoring devices, not calls, keeps a device with many calls from being split into many small
chances: with every device installed, "search the web for ..." went to the calculator's single
call. The bar is the configured ``decision_threshold`` raised to ``SCALE_FRACTION`` of the median
margin the device's own examples get (:meth:`Calibration.scales`): margins differ per device
(image requests 10-14 nats, and chats mentioning a photo 5-8; arithmetic 3-5), and a plugin gets
its bar from its own examples. The arguments are generated afterwards under the call's grammar.

Measured (``make bench ARGS='--only decisions'``): see README.md, "How system calls work on a
0.5B model".
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..prompt import ANSWER_PREFIX, CALL_PREFIX

log = logging.getLogger(__name__)

# The floor of every device's bar, in nats (config key `decision_threshold`). Chosen with
# SCALE_FRACTION on bench/data/decisions_tuning.json and the dev set, all devices installed, on the
# embedded model; the held-out sets judge it. The tuning set scores the same for any floor from
# 2.6 to 3.5, and the dev set with only its four tools would want <= 2.85 (its arithmetic margins
# start at 2.86); but at 2.8, with every device installed, "when is my dentist appointment?" with
# the fact already paged in went to memory.forget (tests/kernel/test_paging.py): users have every
# device, so 3.5 stays. Re-tune when the model or the boot prompt's wording changes (new devices
# do not need it: their bars come from their examples).
DEFAULT_THRESHOLD = 3.5

# A device's bar is at least this fraction of the median margin its own examples get (see
# Calibration.scales); chosen with the threshold on bench/data/decisions_tuning.json and the dev set.
SCALE_FRACTION = 0.55
MAX_SCALE_EXAMPLES = 3

# How much of a device's content-free score (its habit: the calculator is the model's favourite
# first word) is taken off when choosing *which* device. 0 was the model's raw preference: web
# look-ups without a URL went to the calculator; 1 (fully calibrated) sent them to the image
# device. On bench/data/decisions_tuning.json 0.25-0.75 scored alike (24/30 against 23 at 0 and
# 22 at 1); 0.5 was taken, and the held-out sets judged it: 56/72 against 54, 19/25 both, and
# the dev set 36/40 against 33 (all devices, one scoring pass, the decision rules applied).
PRIOR_WEIGHT = 0.5

# pid under which the kernel scores its own calibration prompts
CALIBRATION_PID = 0
# pid under which a turn's decision is scored on the turn's own context (kernel/turn.py), so the
# process keeps its whole conversation in the backend's context for the answer
DECISION_PID = -1


@dataclass(frozen=True)
class Decision:
    call: str | None  # "device.call", or None to answer
    margin: float  # calibrated log P(CALL <device>) - calibrated log P(ANSWER:), in nats
    best: str | None  # the most likely call of the device, when the kernel calls
    threshold: float  # the bar the device's margin had to pass (see device_threshold)
    device: str | None = None  # the most likely device, whether or not it was called


def continuations(names: list[str]) -> list[str]:
    """``ANSWER:`` and ``CALL <name>`` for each device (or call) name."""
    return [ANSWER_PREFIX] + [f"{CALL_PREFIX} {name}" for name in names]


# What calibrations scored in this process, by the same key as on disk (model file and prompts)
_SCORED: dict[str, Any] = {}


def _model_file(backend: Backend) -> bool:
    return bool(backend.model) and Path(backend.model).is_file()


@dataclass
class Calibration:
    """What the decision needs per boot prompt, computed once and reused for every decision.

    - the *baseline*: the scores of ``ANSWER:`` and ``CALL <device>`` after the content-free
      requests (``null_prompts``), subtracted from every decision's scores;
    - each device's *scale*: the median calibrated margin its own example requests get
      (``example_prompts``: device -> prompts ending in one of its examples, at most
      ``MAX_SCALE_EXAMPLES`` used). A device the model calls eagerly (the image device's margins
      run 10-14 nats) needs a higher bar than one it calls shyly (the calculator's run 3-5), and a
      third-party plugin gets its bar from its own examples, without a hand-tuned number.

    With ``store`` set, both are also kept on disk, keyed by the model file (path, size, mtime)
    and the exact prompts, so a restart does not score them again. Within one process they are
    shared under the same key by every kernel (a model switched back to, the test suite's kernels).
    """

    null_prompts: Callable[[], list[str]]
    store: Path | None = None
    example_prompts: Callable[[], dict[str, list[str]]] | None = None
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def _disk_key(self, backend: Backend, parts: Any) -> str:
        model = Path(backend.model)
        stamp = f"{model.stat().st_size}:{model.stat().st_mtime_ns}" if model.is_file() else ""
        blob = json.dumps([backend.name, backend.model, stamp, parts])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _disk(self) -> dict[str, Any]:
        try:
            data = json.loads(self.store.read_text()) if self.store and self.store.is_file() else {}
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # a damaged cache is only a cache: score again

    def _saved(self, backend: Backend, disk_key: str) -> Any:
        """What was scored under ``disk_key`` before: in this process, else on disk; or None."""
        if _model_file(backend) and disk_key in _SCORED:
            return _SCORED[disk_key]
        return self._disk().get(disk_key)

    def _save(self, backend: Backend, disk_key: str, value: Any) -> None:
        if _model_file(backend):  # a model file: its path, size and mtime are in the key
            _SCORED[disk_key] = value
        if self.store is None:
            return
        try:
            saved = self._disk()
            saved[disk_key] = value
            self.store.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.store.with_suffix(".tmp")
            tmp.write_text(json.dumps(saved))
            tmp.replace(self.store)
        except OSError as exc:
            log.warning("could not keep the decision calibration in %s: %s", self.store, exc)

    def baseline(self, backend: Backend, names: list[str]) -> list[float]:
        """Mean scores of ``continuations(names)`` after the content-free requests."""
        key = tuple(names)
        if key in self._cache:
            return self._cache[key]
        conts = continuations(names)
        prompts = self.null_prompts()
        disk_key = self._disk_key(backend, [prompts, conts])
        saved = self._saved(backend, disk_key)
        if isinstance(saved, list) and len(saved) == len(conts):
            self._cache[key] = [float(v) for v in saved]
            return self._cache[key]
        rows = [backend.score(CALIBRATION_PID, p, conts) for p in prompts]
        backend.release(CALIBRATION_PID)
        self._cache[key] = [sum(col) / len(rows) for col in zip(*rows)]
        self._save(backend, disk_key, self._cache[key])
        return self._cache[key]

    def scales(self, backend: Backend, names: list[str]) -> dict[str, float]:
        """Median calibrated margin of each device's own examples (devices without any: absent)."""
        key = ("scales", *names)
        if key in self._cache:
            return self._cache[key]
        examples = {d: ps[:MAX_SCALE_EXAMPLES] for d, ps in (self.example_prompts or dict)().items()
                    if d in names and ps}
        base = self.baseline(backend, names)
        conts = continuations(names)
        disk_key = self._disk_key(backend, ["scales", self.null_prompts(), conts, examples])
        saved = self._saved(backend, disk_key)
        if isinstance(saved, dict) and set(saved) == set(examples):
            self._cache[key] = {d: float(v) for d, v in saved.items()}
            return self._cache[key]
        scales: dict[str, float] = {}
        for device, prompts in examples.items():
            i = names.index(device) + 1
            margins = []
            for prompt in prompts:
                raw = backend.score(CALIBRATION_PID, prompt, conts)
                margins.append((raw[i] - base[i]) - (raw[0] - base[0]))
            scales[device] = statistics.median(margins)
        backend.release(CALIBRATION_PID)
        self._cache[key] = scales
        self._save(backend, disk_key, scales)
        return scales


def devices_of(call_names: list[str]) -> dict[str, list[str]]:
    """Qualified call names grouped by device, in the order the devices first appear."""
    grouped: dict[str, list[str]] = {}
    for name in call_names:
        grouped.setdefault(name.partition(".")[0], []).append(name)
    return grouped


def warm(calibration: Calibration, backend: Backend, call_names: list[str]) -> None:
    """Compute (or load) what :func:`decide` will need for these calls, e.g. at boot."""
    if call_names:
        calibration.scales(backend, list(devices_of(call_names)))


def device_threshold(threshold: float, scale: float | None) -> float:
    """The bar a device's margin must pass: ``threshold``, raised for a device called eagerly."""
    return threshold if scale is None else max(threshold, SCALE_FRACTION * scale)


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
    # Which device: the model's preference, less half its habit (PRIOR_WEIGHT of the baseline).
    # Whether to call it: its fully calibrated margin.
    base = calibration.baseline(backend, device_names) if calibration is not None else [0.0] * len(raw)
    best_index = max(range(1, len(raw)), key=lambda i: raw[i] - PRIOR_WEIGHT * base[i])
    margin = (raw[best_index] - base[best_index]) - (raw[0] - base[0])
    device = device_names[best_index - 1]
    scales = calibration.scales(backend, device_names) if calibration is not None else {}
    threshold = device_threshold(threshold, scales.get(device))
    if margin <= threshold:
        return Decision(None, margin, None, threshold, device)
    calls = grouped[device]
    best = calls[0]
    if len(calls) > 1:
        within = backend.score(pid, prompt, [f"{CALL_PREFIX} {name}" for name in calls])
        best = calls[max(range(len(calls)), key=within.__getitem__)]
    return Decision(best, margin, best, threshold, device)


# After a call whose arguments were refused, the model tries again when it finds ``CALL <call>``
# more likely than ``ANSWER:`` by more than this (nats, raw scores). Raw, not calibrated: the
# request was already judged to need the call; the question now is whether the model, shown the
# error page and its hint, has a correction. On the embedded model, after a calculator refusal
# with the hint, CALL scored about 2.6 nats over ANSWER on the four requests probed.
RETRY_MARGIN = 0.0


def retry(backend: Backend, pid: int, prompt: str, call: str) -> Decision:
    """Whether to call ``call`` again after it failed, or answer: ``CALL <call>`` against
    ``ANSWER:`` after ``prompt`` (which ends with the error page)."""
    answer, again = backend.score(pid, prompt, [ANSWER_PREFIX, f"{CALL_PREFIX} {call}"])
    margin = again - answer
    chosen = call if margin > RETRY_MARGIN else None
    return Decision(chosen, margin, call, RETRY_MARGIN, call.partition(".")[0])
