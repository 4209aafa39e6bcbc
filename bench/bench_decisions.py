"""How well the kernel decides whether to call a device, and which, on the embedded model.

Cases: ../shared/data/tool-decisions.json (40 requests: 15 arithmetic, 10 web, 5 memory, 10 that
need no tool). The four tools there become devices with the same schemas, each with one example
of our own (none taken from the cases). For each case the kernel's own decision step runs (the
log-probability margin of ``CALL <device.call>`` over ``ANSWER:``; see kernel/syscalls/decide.py),
and for a call its arguments are generated under the call's grammar and checked.

    .venv/bin/python bench/bench_decisions.py              # the figures, at the configured threshold
    .venv/bin/python bench/bench_decisions.py --calibrate  # margins per case, best threshold, split-half check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.kernel.devices import Call, Device, Example
from llmos.kernel.prompt import CALL_PREFIX, render
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.decide import DEFAULT_THRESHOLD, decide
from llmos.kernel.syscalls.protocol import grammar_schema, parse_arguments
from llmos.kernel.turn import boot_messages, make_calibration
from llmos.kernel.process import Message
from llmos.kernel.backends.base import SamplingParams

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tool-decisions.json"
HELDOUT = Path(__file__).resolve().parent / "data" / "decisions_heldout.json"

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


def dataset_registry(spec: dict[str, Any], real: bool = True) -> tuple[DeviceRegistry, dict[str, str]]:
    """The devices the cases are judged against; returns the registry and call name -> tool name.

    ``real``: the installed devices (what the kernel really shows the model), plus stand-ins with
    the dataset's schemas for the tools no installed device provides. Otherwise stand-ins only.
    """
    registry = DeviceRegistry.from_entry_points() if real else DeviceRegistry()
    if real:
        registry.start(Path(tempfile.mkdtemp(prefix="llmos-bench-devices-")))
    names: dict[str, str] = {}
    stand_ins: dict[str, Device] = {}
    for tool in spec["tools"]:
        fn = tool["function"]
        device_name, call_name, example = TOOLS[fn["name"]]
        names[f"{device_name}.{call_name}"] = fn["name"]
        try:
            registry.resolve(f"{device_name}.{call_name}")
            continue
        except LookupError:
            pass
        device = stand_ins.setdefault(device_name, Device(device_name))
        device.calls[call_name] = Call(call_name, lambda **kw: None, fn["description"], fn["parameters"], [example])
    for device in stand_ins.values():
        registry.register(device)
    return registry, names


@dataclass
class CaseResult:
    id: str
    expected: str | None
    chosen: str | None
    best: str | None
    margin: float
    arguments: Any = None
    arguments_ok: bool | None = None


def _arguments_ok(case: dict[str, Any], tool: str, args: Any) -> bool:
    if not isinstance(args, dict):
        return False
    if tool == "calculator":
        from llmos.plugins.calculator.engine import CalculatorError, evaluate

        try:
            value = float(evaluate(str(args.get("expression", ""))).value)
        except (CalculatorError, TypeError, ValueError):
            return False
        return abs(value - float(case["expect_value"])) <= 1e-6 * max(1.0, abs(value))
    if tool == "browser_open":
        url = str(args.get("url", ""))
        return url == case["expect_url"] if case.get("expect_url") else url.startswith(("http://", "https://"))
    text = str(args.get("text", args.get("query", ""))).lower()
    return all(k in text for k in case.get("expect_keywords", []))


def evaluate_cases(backend: Any, threshold: float, with_arguments: bool = True,
                   cases_file: Path = DATA, real: bool = False) -> list[CaseResult]:
    spec = json.loads(DATA.read_text())
    spec["cases"] = json.loads(cases_file.read_text())["cases"]
    registry, names = dataset_registry(spec, real)
    names.setdefault("browser.search", "browser_open")  # a web search is the right device for "look it up"
    boot = boot_messages(registry)
    call_names = [name for name, _ in registry.calls()]
    calibration = make_calibration(registry)
    results = []
    for pid, case in enumerate(spec["cases"], start=10_000):
        prompt = render([*boot, Message("user", case["prompt"])])
        decision = decide(backend, pid, prompt, call_names, threshold, calibration)
        chosen = names.get(decision.call, decision.call) if decision.call else None
        result = CaseResult(case["id"], case["expect_tool"], chosen, names.get(decision.best, decision.best),
                            decision.margin)
        if with_arguments and chosen is not None:
            _, call = registry.resolve(decision.call)
            stream = backend.open(pid, f"{prompt}{CALL_PREFIX} {decision.call} ",
                                  SamplingParams(max_tokens=200), json_schema=grammar_schema(call.parameters))
            text = "".join(stream.next(200))
            stream.close()
            result.arguments, _ = parse_arguments(text)
            result.arguments_ok = chosen == case["expect_tool"] and _arguments_ok(case, chosen, result.arguments)
        backend.release(pid)
        results.append(result)
    return results


def accuracy(results: list[CaseResult], threshold: float) -> tuple[int, int, int]:
    """(right decisions, right among tool cases, right among no-tool cases) at ``threshold``."""
    tool_right = sum(1 for r in results if r.expected and r.margin > threshold and r.best == r.expected)
    none_right = sum(1 for r in results if not r.expected and r.margin <= threshold)
    return tool_right + none_right, tool_right, none_right


def best_threshold(results: list[CaseResult]) -> float:
    candidates = sorted({round(r.margin, 3) for r in results})
    scored = [(accuracy(results, t)[0], -abs(t), t) for t in candidates]
    return max(scored)[2]


def run(ctx: Any, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    results = evaluate_cases(ctx.backend(), threshold)
    right, tool_right, none_right = accuracy(results, threshold)
    args_ok = sum(1 for r in results if r.arguments_ok)
    wrong = ", ".join(f"{r.id}->{r.chosen or 'answer'}" for r in results
                      if (r.chosen or None) != r.expected)
    # Split-half check: calibrate on one half, score the other (both ways).
    halves = (results[0::2], results[1::2])
    held = sum(accuracy(b, best_threshold(a))[0] for a, b in (halves, halves[::-1]))
    heldout = evaluate_cases(ctx.backend(), threshold, cases_file=HELDOUT)
    installed = evaluate_cases(ctx.backend(), threshold, with_arguments=False, real=True)
    i_right, i_tool, i_none = accuracy(installed, threshold)
    i_wrong = ", ".join(f"{r.id}->{r.chosen or 'answer'}" for r in installed if (r.chosen or None) != r.expected)
    h_right, h_tool, h_none = accuracy(heldout, threshold)
    n_tool = sum(1 for r in heldout if r.expected)
    h_wrong = ", ".join(f"{r.id}->{r.chosen or 'answer'}" for r in heldout if (r.chosen or None) != r.expected)
    return [
        {"name": "decisions_right", "value": right, "unit": "/40", "goal": ">= 36",
         "detail": f"threshold {threshold} nats; tool cases {tool_right}/30; wrong: {wrong or 'none'}"},
        {"name": "decisions_no_tool_right", "value": none_right, "unit": "/10", "goal": ">= 8", "detail": ""},
        {"name": "decision_arguments_valid", "value": args_ok, "unit": "/30", "goal": None,
         "detail": "arguments generated under the call's grammar, checked against the expected value/url/keywords"},
        {"name": "decisions_right_split_half", "value": held, "unit": "/40", "goal": None,
         "detail": "threshold tuned on one half of the cases, scored on the other, both ways"},
        {"name": "decisions_right_heldout", "value": h_right, "unit": f"/{len(heldout)}", "goal": None,
         "detail": f"bench/data/decisions_heldout.json, never tuned on; tool {h_tool}/{n_tool}, "
                   f"no-tool {h_none}/{len(heldout) - n_tool}; arguments ok "
                   f"{sum(1 for r in heldout if r.arguments_ok)}; wrong: {h_wrong or 'none'}"},
        {"name": "decisions_right_installed_devices", "value": i_right, "unit": "/40", "goal": None,
         "detail": f"the same 40 cases with every installed device in the prompt (stand-ins for missing "
                   f"ones): tool {i_tool}/30, no-tool {i_none}/10; wrong: {i_wrong or 'none'}"},
    ]


def main() -> int:
    from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions
    from llmos.kernel.model_file import default_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--heldout", action="store_true", help="the held-out cases instead of the dev set")
    parser.add_argument("--installed", action="store_true", help="every installed device in the prompt")
    args = parser.parse_args()
    backend = LlamaCppBackend(LlamaOptions(default_model_path(), n_ctx=8192))
    backend.load()
    results = evaluate_cases(backend, args.threshold, with_arguments=not args.calibrate,
                             cases_file=HELDOUT if args.heldout else DATA, real=args.installed)
    if args.calibrate:
        for r in sorted(results, key=lambda r: r.margin):
            print(f"{r.margin:8.3f}  {r.id:8} expected {r.expected or 'answer':16} best {r.best}")
        best = best_threshold(results)
        print(f"best threshold {best}: {accuracy(results, best)}")
        halves = (results[0::2], results[1::2])
        for a, b in (halves, halves[::-1]):
            t = best_threshold(a)
            print(f"tuned on one half: {t} -> other half {accuracy(b, t)}")
        return 0
    for r in results:
        mark = "ok " if (r.chosen or None) == r.expected else "BAD"
        print(f"{mark} {r.id:8} {r.margin:7.2f} {r.chosen or 'answer':16} {json.dumps(r.arguments)} {r.arguments_ok}")
    print(accuracy(results, args.threshold), "arguments ok", sum(1 for r in results if r.arguments_ok))
    return 0


if __name__ == "__main__":
    sys.exit(main())
