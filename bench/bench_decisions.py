"""How well the kernel decides whether to call a device, and which, on the embedded model.

Case sets (requests with the call they should get, or none):

- dev: ../shared/data/tool-decisions.json (40 requests: 15 arithmetic, 10 web, 5 memory, 10 that
  need no tool). Its four tools become devices with the same schemas, each with one example of our
  own (none taken from the cases).
- held-out (4 tools): bench/data/decisions_heldout.json, 25 requests for the same four tools.
- held-out (devices): bench/data/decisions_devices_heldout.json, requests for every call of every
  built-in device and the speech device (a stand-in with its manifest), and 25 chats.
- tuning: bench/data/decisions_tuning.json, the only device cases a design choice may be tuned on.

"All devices" means what users get: every installed device in the prompt, plus the speech
stand-in (and stand-ins with the dataset's schema for a dataset tool no device provides). For each
case the kernel's own decision step runs (kernel/syscalls/decide.py); on the dev set with the four
tools, a call's arguments are generated under its grammar and checked too.

    .venv/bin/python bench/bench_decisions.py                      # dev set, 4 tools, with arguments
    .venv/bin/python bench/bench_decisions.py --set heldout-devices --all-devices
    .venv/bin/python bench/bench_decisions.py --set tuning --all-devices --calibrate
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.kernel.backends.base import SamplingParams
from llmos.kernel.devices import Call, Device, Example
from llmos.kernel.process import Message
from llmos.kernel.prompt import CALL_PREFIX, render
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.decide import DEFAULT_THRESHOLD, Decision, continuations, decide
from llmos.kernel.syscalls.protocol import grammar_schema, parse_arguments
from llmos.kernel.turn import boot_messages, make_calibration

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tool-decisions.json"
HERE = Path(__file__).resolve().parent / "data"
SETS: dict[str, Path] = {
    "dev": DATA,
    "heldout": HERE / "decisions_heldout.json",
    "heldout-devices": HERE / "decisions_devices_heldout.json",
    "tuning": HERE / "decisions_tuning.json",
}

FIGURES = ("decisions_right", "decisions_no_tool_right", "decision_arguments_valid",
           "decisions_right_all_devices", "decisions_right_heldout_all_devices",
           "decisions_right_heldout_devices", "decision_seconds")

# dataset tool name -> (device, call, one example of our own)
TOOLS: dict[str, tuple[str, str, Example]] = {
    "calculator": ("calculator", "evaluate", Example("What is 12.5% of 340?", {"expression": "12.5% of 340"})),
    "browser_open": ("browser", "open", Example("Open https://example.com/about and summarise it.",
                                                 {"url": "https://example.com/about"})),
    "memory_remember": ("memory", "remember", Example("Remember that my bike lock code is 4821.",
                                                       {"text": "my bike lock code is 4821"})),
    "memory_recall": ("memory", "recall", Example("What did I tell you about my bike lock?",
                                                   {"query": "bike lock code"})),
}
# a web search is the right device for "look it up online" too
ALSO_RIGHT: dict[str, tuple[str, ...]] = {"browser.open": ("browser.search",)}


def speech_stand_in() -> Device:
    """The speech device being added elsewhere: the same manifest, calls that do nothing."""
    device = Device("speech", description="Speak aloud and listen through the microphone.",
                    permissions=["speaker", "microphone"])

    @device.call(examples=[Example("Say 'dinner is ready' out loud.", {"text": "dinner is ready"})],
                 side_effects=True)
    def speak(text: str) -> str:
        """Say a text aloud through the speaker.

        Args:
            text: What to say.
        """
        return ""

    @device.call(examples=[Example("Listen for 10 seconds and tell me what I said.", {"seconds": 10})])
    def listen(seconds: float = 5) -> str:
        """Record from the microphone and transcribe what is said.

        Args:
            seconds: How long to record, in seconds.
        """
        return ""

    return device


def dataset_registry(spec: dict[str, Any], all_devices: bool) -> DeviceRegistry:
    """The devices the cases are judged against.

    ``all_devices``: the installed devices and the speech stand-in (what the kernel really shows
    the model), plus stand-ins with the dataset's schemas for any dataset tool no device provides.
    Otherwise stand-ins for the dataset's four tools only.
    """
    registry = DeviceRegistry.from_entry_points() if all_devices else DeviceRegistry()
    if all_devices:
        registry.start(Path(tempfile.mkdtemp(prefix="llmos-bench-devices-")))
        if "speech" not in {d.name for d in registry.devices()}:
            registry.register(speech_stand_in())
    stand_ins: dict[str, Device] = {}
    for tool in spec["tools"]:
        fn = tool["function"]
        device_name, call_name, example = TOOLS[fn["name"]]
        try:
            registry.resolve(f"{device_name}.{call_name}")
            continue
        except LookupError:
            pass
        device = stand_ins.setdefault(device_name, Device(device_name))
        device.calls[call_name] = Call(call_name, lambda **kw: None, fn["description"], fn["parameters"], [example])
    for device in stand_ins.values():
        registry.register(device)
    return registry


@dataclass
class Case:
    id: str
    prompt: str
    expect: str | None  # "device.call", or None for a plain answer
    accept: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)  # the case as written (expected values)

    def right(self, call: str | None) -> bool:
        return call == self.expect or (call is not None and call in self.accept)


def load_cases(path: Path) -> list[Case]:
    """Either format: the dataset's (``expect_tool``: a tool name) or ours (``expect``: a call)."""
    cases = []
    for raw in json.loads(path.read_text())["cases"]:
        if "expect_tool" in raw:
            tool = raw["expect_tool"]
            expect = f"{TOOLS[tool][0]}.{TOOLS[tool][1]}" if tool else None
            accept = ALSO_RIGHT.get(expect or "", ())
        else:
            expect, accept = raw["expect"], tuple(raw.get("accept", ()))
        cases.append(Case(raw["id"], raw["prompt"], expect, accept, raw))
    return cases


@dataclass
class CaseResult:
    case: Case
    decision: Decision
    seconds: float
    run_threshold: float  # the floor the kernel decided with (decision.threshold is the device's bar)
    arguments: Any = None
    arguments_ok: bool | None = None

    @property
    def id(self) -> str:
        return self.case.id

    def bar(self, threshold: float) -> float:
        """The device's bar with the floor at ``threshold``: the floor, or the bar its examples set
        when that is higher (known when it was higher than the floor of the run)."""
        raised = self.decision.threshold if self.decision.threshold > self.run_threshold else -math.inf
        return max(threshold, raised)

    def right_at(self, threshold: float) -> bool:
        if self.decision.margin <= self.bar(threshold):
            return self.case.right(None)
        if self.decision.best is None:  # a lower floor than the run's: stage two did not run
            return self.case.expect is not None and self.case.expect.startswith(f"{self.decision.device}.")
        return self.case.right(self.decision.best)


def _arguments_ok(case: Case, args: Any) -> bool:
    if not isinstance(args, dict):
        return False
    expect = case.raw
    if case.expect == "calculator.evaluate":
        from llmos.plugins.calculator.engine import CalculatorError, evaluate

        try:
            value = float(evaluate(str(args.get("expression", ""))).value)
        except (CalculatorError, TypeError, ValueError):
            return False
        return abs(value - float(expect["expect_value"])) <= 1e-6 * max(1.0, abs(value))
    if case.expect == "browser.open":
        url = str(args.get("url", ""))
        return url == expect["expect_url"] if expect.get("expect_url") else url.startswith(("http://", "https://"))
    text = str(args.get("text", args.get("query", ""))).lower()
    return all(k in text for k in expect.get("expect_keywords", []))


def evaluate_cases(backend: Any, threshold: float, cases_file: Path = DATA, all_devices: bool = False,
                   with_arguments: bool = False) -> list[CaseResult]:
    # With every device installed the dev set's four tools are all real devices, so its tool
    # specifications add nothing: a clone without ../shared still judges the held-out sets.
    spec = json.loads(DATA.read_text()) if DATA.exists() or not all_devices else {"tools": []}
    registry = dataset_registry(spec, all_devices)
    boot = boot_messages(registry)
    call_names = [name for name, _ in registry.calls()]
    calibration = make_calibration(registry)
    decide(backend, 9_999, render([*boot, Message("user", "Hello")]), call_names, threshold, calibration)
    backend.release(9_999)  # the baseline and the boot prefix are ready: time decisions only
    results = []
    for pid, case in enumerate(load_cases(cases_file), start=10_000):
        prompt = render([*boot, Message("user", case.prompt)])
        started = time.perf_counter()
        decision = decide(backend, pid, prompt, call_names, threshold, calibration)
        result = CaseResult(case, decision, time.perf_counter() - started, threshold)
        if with_arguments and decision.call is not None:
            _, call = registry.resolve(decision.call)
            stream = backend.open(pid, f"{prompt}{CALL_PREFIX} {decision.call} ",
                                  SamplingParams(max_tokens=200), json_schema=grammar_schema(call.parameters))
            text = "".join(stream.next(200))
            stream.close()
            result.arguments, _ = parse_arguments(text)
            result.arguments_ok = case.right(decision.call) and _arguments_ok(case, result.arguments)
        backend.release(pid)
        results.append(result)
    return results


def flat_seconds(backend: Any, cases_file: Path, limit: int) -> list[float]:
    """Seconds per decision of the single-stage design (every call scored against ``ANSWER:``)."""
    registry = dataset_registry(json.loads(DATA.read_text()), all_devices=True)
    boot = boot_messages(registry)
    conts = continuations([name for name, _ in registry.calls()])
    backend.score(9_999, render([*boot, Message("user", "Hello")]), conts)
    backend.release(9_999)
    seconds = []
    for pid, case in enumerate(load_cases(cases_file)[:limit], start=20_000):
        started = time.perf_counter()
        backend.score(pid, render([*boot, Message("user", case.prompt)]), conts)
        seconds.append(time.perf_counter() - started)
        backend.release(pid)
    return seconds


def accuracy(results: list[CaseResult], threshold: float) -> tuple[int, int, int]:
    """(right decisions, right among tool cases, right among no-tool cases) at ``threshold``."""
    tool_right = sum(1 for r in results if r.case.expect and r.right_at(threshold))
    none_right = sum(1 for r in results if not r.case.expect and r.right_at(threshold))
    return tool_right + none_right, tool_right, none_right


def best_threshold(results: list[CaseResult]) -> float:
    candidates = sorted({round(r.decision.margin, 3) for r in results})
    scored = [(accuracy(results, t)[0], -abs(t), t) for t in candidates]
    return max(scored)[2]


def wrong(results: list[CaseResult], threshold: float) -> str:
    return ", ".join(f"{r.id}->{r.decision.call or 'answer'}" for r in results if not r.right_at(threshold)) or "none"


def summary(results: list[CaseResult], threshold: float) -> str:
    right, tool_right, none_right = accuracy(results, threshold)
    n_tool = sum(1 for r in results if r.case.expect)
    return (f"tool {tool_right}/{n_tool}, no-tool {none_right}/{len(results) - n_tool}; "
            f"wrong: {wrong(results, threshold)}")


def run(ctx: Any, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    backend = ctx.backend()
    ctx.log("decisions: dev set, 4 tools, with arguments")
    dev = evaluate_cases(backend, threshold, with_arguments=True)
    right, _, none_right = accuracy(dev, threshold)
    ctx.log("decisions: dev set, held-out sets, all devices")
    dev_all = evaluate_cases(backend, threshold, all_devices=True)
    held_all = evaluate_cases(backend, threshold, SETS["heldout"], all_devices=True)
    devices_all = evaluate_cases(backend, threshold, SETS["heldout-devices"], all_devices=True)
    two_stage = [r.seconds for r in devices_all]
    ctx.log("decisions: the single-stage design, for the seconds per decision")
    flat = flat_seconds(backend, SETS["heldout-devices"], ctx.reps(20, 8))
    return [
        {"name": "decisions_right", "value": right, "unit": f"/{len(dev)}", "goal": ">= 36",
         "detail": f"dev set, its 4 tools only, threshold {threshold} nats; {summary(dev, threshold)}"},
        {"name": "decisions_no_tool_right", "value": none_right, "unit": "/10", "goal": ">= 8", "detail": ""},
        {"name": "decision_arguments_valid", "value": sum(1 for r in dev if r.arguments_ok), "unit": "/30",
         "goal": None,
         "detail": "arguments generated under the call's grammar, checked against the expected value/url/keywords"},
        {"name": "decisions_right_all_devices", "value": accuracy(dev_all, threshold)[0], "unit": f"/{len(dev_all)}",
         "goal": ">= 34", "detail": f"dev set, every installed device + speech in the prompt; {summary(dev_all, threshold)}"},
        {"name": "decisions_right_heldout_all_devices", "value": accuracy(held_all, threshold)[0],
         "unit": f"/{len(held_all)}", "goal": None,
         "detail": f"bench/data/decisions_heldout.json (never tuned on), all devices; {summary(held_all, threshold)}"},
        {"name": "decisions_right_heldout_devices", "value": accuracy(devices_all, threshold)[0],
         "unit": f"/{len(devices_all)}", "goal": None,
         "detail": f"bench/data/decisions_devices_heldout.json (never tuned on), all devices; "
                   f"{summary(devices_all, threshold)}"},
        {"name": "decision_seconds", "value": round(statistics.median(two_stage), 3), "unit": "s", "goal": None,
         "detail": f"median seconds per decision over the {len(two_stage)} held-out device cases, all devices, "
                   f"boot prefix cached; on their first {len(flat)} (all calls) two-stage "
                   f"{statistics.median(two_stage[:len(flat)]):.3f} s against {statistics.median(flat):.3f} s for "
                   f"the single-stage design (every call scored), this run"},
    ]


def main() -> int:
    from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions
    from llmos.kernel.model_file import default_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), default="dev")
    parser.add_argument("--all-devices", action="store_true", help="every installed device (+ speech) in the prompt")
    parser.add_argument("--calibrate", action="store_true", help="margins per case, best threshold, split halves")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    backend = LlamaCppBackend(LlamaOptions(default_model_path(), n_ctx=8192))
    backend.load()
    results = evaluate_cases(backend, args.threshold, SETS[args.set], args.all_devices,
                             with_arguments=args.set == "dev" and not args.all_devices and not args.calibrate)
    if args.calibrate:
        for r in sorted(results, key=lambda r: r.decision.margin):
            print(f"{r.decision.margin:8.3f}  {r.id:9} expected {r.case.expect or 'answer':20} "
                  f"device {r.decision.device}")
        best = best_threshold(results)
        print(f"best threshold {best}: {accuracy(results, best)}")
        halves = (results[0::2], results[1::2])
        for a, b in (halves, halves[::-1]):
            t = best_threshold(a)
            print(f"tuned on one half: {t} -> other half {accuracy(b, t)}")
        return 0
    for r in results:
        mark = "ok " if r.right_at(args.threshold) else "BAD"
        print(f"{mark} {r.id:9} {r.decision.margin:7.2f} {r.decision.call or 'answer':20} {r.seconds:6.3f}s "
              f"{json.dumps(r.arguments) if r.arguments is not None else ''}")
    print(accuracy(results, args.threshold), "arguments ok", sum(1 for r in results if r.arguments_ok),
          f"median {statistics.median(r.seconds for r in results):.3f} s per decision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
