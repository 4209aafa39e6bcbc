"""Function calling on a suite nobody here wrote: the Berkeley Function Calling Leaderboard's
``simple_python`` category through `llmos serve`, with the official `openai` client, graded by
the AST checker in the ``bfcl-eval`` wheel (its data ships in the wheel).

- ``bfcl_simple_python_accuracy``: the share of cases whose one call passes BFCL's checker
  (function name, required parameters, types and values). A fixed sample of 100 cases (every
  fourth, from the third) by default; ``--all`` runs all 400. Each case is sent as BFCL's OpenAI function-calling
  handler sends it: the functions as OpenAI tools (BFCL's types mapped to JSON schema's, dots in
  names written as underscores), ``tool_choice: "auto"``, temperature 0.
- ``bfcl_irrelevance_no_call``: the share of BFCL's ``irrelevance`` cases (a request no offered
  function can serve; every fourth of 240, or all with ``--all``) answered without a call.

For reference, the public leaderboard has Qwen3-0.6B (FC) at 64.2% and Hammer2.1-0.5b at 62.4% on
Non-Live Simple AST. ``bfcl-eval`` is installed by the Makefile (with ``--no-deps``: only its data
and checker are used).

Run alone: ``.venv/bin/python bench/run.py --only bfcl``, or ``.venv/bin/python
bench/bench_bfcl.py [--all] [--limit N] [-v]``.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
import types
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = ("bfcl_simple_python_accuracy", "bfcl_irrelevance_no_call")

STEP = 4  # the default sample: every fourth case, from the third (OFFSET)
OFFSET = 2  # cases 0, 4, 8, ... were looked at while the prompt was chosen (docs/decisions.md)
# a call's arguments fit in this; an answer (irrelevance) is judged only on having no call, and a
# 0.5B model's answer can repeat itself up to the context's end
MAX_TOKENS = 400
MODEL_NAME = "llmos"  # the name the checker is told (its function names use underscores)

# BFCL's own mapping of its types to OpenAPI's (bfcl_eval/constants/type_mappings.py)
TYPES = {"integer": "integer", "number": "number", "float": "number", "string": "string",
         "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array", "dict": "object",
         "object": "object", "tuple": "array", "any": "string", "byte": "integer", "short": "integer",
         "long": "integer", "double": "number", "char": "string"}


def _load(name: str) -> list[dict[str, Any]]:
    data = resources.files("bfcl_eval").joinpath("data", name)
    return [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]


def _checker() -> Any:
    """BFCL's AST checker, without importing every vendor SDK: its model table
    (``constants.model_config``, which imports all of BFCL's model handlers) is replaced by the one
    entry the checker reads, for this server."""
    if "bfcl_eval.constants.model_config" not in sys.modules:
        table = types.ModuleType("bfcl_eval.constants.model_config")
        table.MODEL_CONFIG_MAPPING = {MODEL_NAME: types.SimpleNamespace(underscore_to_dot=True)}  # type: ignore[attr-defined]
        sys.modules[table.__name__] = table
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    return lambda functions, output, answer: ast_checker(functions, output, answer, Language.PYTHON,
                                                         "simple_python", MODEL_NAME)


def _cast(properties: dict[str, Any]) -> dict[str, Any]:
    """BFCL's types as JSON schema's (bfcl_eval/model_handler/utils.py's _cast_to_openai_type)."""
    for value in properties.values():
        kind = value.get("type", "string")
        if kind == "float":
            value["format"] = "float"
            value["description"] = value.get("description", "") + " This is a float type value."
        value["type"] = TYPES.get(kind, "string")
        if value["type"] in ("array", "object"):
            if "properties" in value:
                value["properties"] = _cast(value["properties"])
            elif "items" in value:
                items = value["items"]
                items["type"] = TYPES.get(items.get("type", "string"), "string")
                if items["type"] == "object" and "properties" in items:
                    items["properties"] = _cast(items["properties"])
                elif items["type"] == "array" and "items" in items:
                    items["items"]["type"] = TYPES.get(items["items"].get("type", "string"), "string")
    return properties


def as_tools(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BFCL's functions as OpenAI tools, as BFCL's OpenAI handler sends them."""
    tools = []
    for function in copy.deepcopy(functions):
        function["name"] = re.sub(r"\.", "_", function["name"])
        function["parameters"]["type"] = "object"
        function["parameters"]["properties"] = _cast(function["parameters"]["properties"])
        tools.append({"type": "function", "function": function})
    return tools


def _ask(client: Any, model: str, case: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    started = time.perf_counter()
    reply = client.chat.completions.create(model=model, messages=case["question"][0],
                                           tools=as_tools(case["function"]), temperature=0,
                                           max_tokens=MAX_TOKENS)
    calls = reply.choices[0].message.tool_calls or []
    output = []
    for call in calls:
        try:
            output.append({call.function.name: json.loads(call.function.arguments)})
        except json.JSONDecodeError:
            output.append({call.function.name: call.function.arguments})
    return output, time.perf_counter() - started


def _sample(cases: list[dict[str, Any]], every: int, limit: int | None) -> list[dict[str, Any]]:
    picked = cases[OFFSET::every] if every > 1 else cases
    return picked[:limit] if limit else picked


def measure(client: Any, model: str, *, every: int = STEP, limit: int | None = None, wants: Any = None,
            log: Any = print, verbose: bool = False) -> list[dict[str, Any]]:
    wants = wants or (lambda name: True)
    figures = []
    if wants("bfcl_simple_python_accuracy"):
        check = _checker()
        answers = {a["id"]: a["ground_truth"] for a in _load("possible_answer/BFCL_v4_simple_python.json")}
        cases = _sample(_load("BFCL_v4_simple_python.json"), every, limit)
        right, seconds, no_call = 0, [], 0
        for n, case in enumerate(cases, 1):
            output, took = _ask(client, model, case)
            seconds.append(took)
            verdict = check(case["function"], output, answers[case["id"]]) if output else {"valid": False,
                                                                                           "error": ["no call"]}
            no_call += not output
            right += bool(verdict["valid"])
            if verbose:
                log(f"{case['id']}: {'ok ' if verdict['valid'] else 'BAD'} {json.dumps(output)[:160]} "
                    f"{'' if verdict['valid'] else verdict.get('error')}")
            elif n % 10 == 0:
                log(f"bfcl simple_python {n}/{len(cases)}: {right} right")
        figures.append({
            "name": "bfcl_simple_python_accuracy", "value": round(100 * right / len(cases), 1), "unit": "%",
            "goal": ">= 70",
            "detail": f"{right}/{len(cases)} cases right ({no_call} without a call), "
                      f"{sum(seconds) / len(seconds):.1f} s a case; BFCL v4 simple_python through llmos serve",
        })
    if wants("bfcl_irrelevance_no_call"):
        cases = _sample(_load("BFCL_v4_irrelevance.json"), every, limit)
        quiet = 0
        for n, case in enumerate(cases, 1):
            output, _ = _ask(client, model, case)
            quiet += not output
            if verbose:
                log(f"{case['id']}: {'ok ' if not output else 'CALLED'} {json.dumps(output)[:160]}")
        figures.append({
            "name": "bfcl_irrelevance_no_call", "value": round(100 * quiet / len(cases), 1), "unit": "%",
            "goal": None,
            "detail": f"{quiet}/{len(cases)} requests no offered function serves answered without a call",
        })
    return figures


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    import openai

    from llmos.app.server.app import ServeOptions, make_app, plain_model_name
    from llmos.app.server.http import Server, bind
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    kernel = Kernel(ctx.backend(), DeviceRegistry()).start()  # client tools need no devices
    try:
        kernel.wait_ready(600)
        server = Server(make_app(kernel, ServeOptions()), bind("127.0.0.1", 0)).start()
        try:
            client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
            every = 1 if "--all" in sys.argv else STEP
            return measure(client, plain_model_name(kernel), every=every, limit=10 if ctx.quick else None,
                           wants=ctx.wants, log=ctx.log)
        finally:
            server.stop()
    finally:
        kernel.shutdown(close_backend=False)


def main() -> None:
    import argparse

    import openai

    from llmos.app.server.app import ServeOptions, make_app, plain_model_name
    from llmos.app.server.http import Server, bind
    from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions
    from llmos.kernel.loop import Kernel
    from llmos.kernel.model_file import default_model_path
    from llmos.kernel.registry import DeviceRegistry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="every case, not every fourth")
    parser.add_argument("--limit", type=int, help="at most this many cases of each set")
    parser.add_argument("--only", choices=FIGURES, help="one of the two figures")
    parser.add_argument("--model", help="a GGUF file (default: the embedded model)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = parser.parse_args()
    backend = LlamaCppBackend(LlamaOptions(args.model or default_model_path(), n_ctx=8192))
    backend.load()
    kernel = Kernel(backend, DeviceRegistry()).start()
    try:
        kernel.wait_ready(600)
        server = Server(make_app(kernel, ServeOptions()), bind("127.0.0.1", 0)).start()
        try:
            client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
            figures = measure(client, plain_model_name(kernel), every=1 if args.all else STEP, limit=args.limit,
                              wants=(lambda name: name == args.only) if args.only else None,
                              log=lambda m: print(m, file=sys.stderr), verbose=args.verbose)
        finally:
            server.stop()
    finally:
        kernel.shutdown()
    for figure in figures:
        print(f"{figure['name']}: {figure['value']} {figure['unit']}  ({figure['detail']})")


if __name__ == "__main__":
    main()
