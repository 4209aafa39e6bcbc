"""The benchmark harness: runs every ``bench/bench_*.py`` and reports their figures against goals.

Usage::

    .venv/bin/python bench/run.py              # everything (`make bench` does this)
    .venv/bin/python bench/run.py --quick      # fewer repetitions
    .venv/bin/python bench/run.py --only kv    # modules or figures whose name contains "kv"
    .venv/bin/python bench/run.py --only kv,voice --model 1.5b   # either; on another model

It prints a table (name, value, unit, goal, pass/FAIL), writes ``bench/results.json`` (``{"run":
{...}, "figures": [...]}``: when, on which model, CPUs and load, and each figure) and, for a run
without ``--only``, ``docs/benchmarks.md`` from it (``bench/report.py``). It exits 0
even when a goal is missed: the run is a report. It exits 1 when a benchmark crashed (raised, or
returned something that is not a list of figures), after running the others.

Adding a benchmark
------------------

Create ``bench/bench_<topic>.py`` with a function ``run(ctx) -> list[dict]``. Each dict is one
figure::

    {"name": "kv_restore_speedup",   # unique across all benchmarks
     "value": 42.0,                  # a float
     "unit": "x",                    # "x" for ratios, "s", "tok/s", ...
     "goal": ">= 10",                # ">=", "<=", ">", "<" or "==" and a number; or None
     "detail": "prefill 3.1 s vs restore 0.07 s (medians of 5)"}  # optional: raw figures

``ctx`` (:class:`BenchContext`) hands out shared, lazily created resources, so the model is
loaded once for the whole run: ``ctx.backend()`` (a loaded ``LlamaCppBackend`` on the default
model, n_ctx 8192), ``ctx.raw_llama()`` (a plain ``llama_cpp.Llama`` with the same settings),
``ctx.registry()``, ``ctx.kernel(options)`` (a started kernel on the shared backend, as a context
manager), ``ctx.model_path``, ``ctx.n_ctx``, ``ctx.n_threads``, ``ctx.quick`` and
``ctx.reps(normal, quick)``. ``ctx.log(...)`` prints progress to stderr.

The machine is shared and noisy: compare side by side within one run (ratios of interleaved
repetitions, medians), never against an absolute time measured elsewhere.

A module that measures several figures may raise an exception with a ``figures`` attribute (the
list of figures it finished): they are reported, and the run still counts as crashed.

A module may declare ``FIGURES = ("name", ...)``: ``--only`` then selects it by figure name too,
and ``ctx.wants(name)`` tells it which of its figures were asked for (it may skip the others).
A module is also selected when ``--only`` matches its file name.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import report
from report import format_value

if TYPE_CHECKING:
    from llmos.kernel.backends.llamacpp import LlamaCppBackend
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry
    from llmos.kernel.turn import TurnOptions

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "results.json"
N_CTX = 8192

_GOAL_RE = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


# --- the shared context -------------------------------------------------------------------------


@dataclass
class BenchContext:
    """Shared resources for the benchmarks, created on first use and reused by every module."""

    model_path: Path
    quick: bool = False
    only: str | None = None
    n_ctx: int = N_CTX
    n_threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    _backend: "LlamaCppBackend | None" = field(default=None, init=False, repr=False)
    _raw: Any = field(default=None, init=False, repr=False)
    _registry: "DeviceRegistry | None" = field(default=None, init=False, repr=False)
    _module_selected: bool = field(default=True, init=False, repr=False)

    def reps(self, normal: int, quick: int) -> int:
        """How many repetitions to run: ``quick`` under ``--quick``."""
        return quick if self.quick else normal

    def wants(self, figure: str) -> bool:
        """Was ``figure`` asked for? (Always, unless ``--only`` selected the module by figure name.)"""
        return self._module_selected or matches(self.only, figure)

    def log(self, message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def backend(self) -> "LlamaCppBackend":
        """The llmos llama.cpp backend on the default model, loaded once."""
        if self._backend is None:
            from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions

            self.log(f"loading the backend ({self.model_path.name}, n_ctx {self.n_ctx}, {self.n_threads} threads)")
            backend = LlamaCppBackend(LlamaOptions(self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads))
            backend.load()
            self._backend = backend
        return self._backend

    def raw_llama(self) -> Any:
        """A plain ``llama_cpp.Llama`` on the same model with the backend's settings (a baseline)."""
        if self._raw is None:
            import llama_cpp

            from llmos.kernel.backends.llamacpp import LlamaOptions

            defaults = LlamaOptions(self.model_path)
            self.log("loading a plain llama_cpp.Llama (baseline)")
            self._raw = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_batch=defaults.n_batch,
                seed=defaults.seed,
                logits_all=False,
                verbose=False,
            )
        return self._raw

    def registry(self) -> "DeviceRegistry":
        if self._registry is None:
            from llmos.kernel.registry import DeviceRegistry

            self._registry = DeviceRegistry.from_entry_points()
        return self._registry

    @contextlib.contextmanager
    def kernel(self, options: "TurnOptions | None" = None, backend: Any = None) -> Iterator["Kernel"]:
        """A started kernel on the shared backend (or ``backend``, e.g. a wrapper around it).

        On exit the kernel stops, the model stays loaded, and the backend forgets the kernel's
        processes (pids restart at 1 in every kernel, and the backend is shared).
        """
        from llmos.kernel.loop import Kernel

        kernel = Kernel(backend if backend is not None else self.backend(), self.registry(), options).start()
        try:
            kernel.wait_ready(120)
            yield kernel
        finally:
            kernel.shutdown(close_backend=False)
            for info in kernel.processes():
                self.backend().release(int(info["pid"]))

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None


# --- figures ------------------------------------------------------------------------------------


class BadFigure(Exception):
    """A benchmark returned something that is not a figure."""


def check_goal(goal: str | None, value: float) -> bool:
    """Does ``value`` meet ``goal`` (e.g. ``">= 0.97"``)? No goal: nothing to miss."""
    if goal is None:
        return True
    match = _GOAL_RE.match(goal)
    if match is None:
        raise BadFigure(f"goal {goal!r} is not like '>= 0.97'")
    op, bound = match.group(1), float(match.group(2))
    if math.isnan(value):
        return False
    return {
        ">=": value >= bound, "<=": value <= bound, ">": value > bound, "<": value < bound, "==": value == bound,
    }[op]


def normalise(raw: Any, module: str) -> dict[str, Any]:
    """One figure as written to results.json, with ``passed``; raises BadFigure if malformed."""
    if not isinstance(raw, dict):
        raise BadFigure(f"{module}: a figure is a dict, got {type(raw).__name__}")
    missing = {"name", "value", "unit", "goal"} - raw.keys()
    if missing:
        raise BadFigure(f"{module}: figure {raw.get('name')!r} lacks {sorted(missing)}")
    name, value, unit, goal = raw["name"], raw["value"], raw["unit"], raw["goal"]
    if not isinstance(name, str) or not name:
        raise BadFigure(f"{module}: a figure's name must be a non-empty str, got {name!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadFigure(f"{module}: {name}: value must be a number, got {value!r}")
    if not isinstance(unit, str):
        raise BadFigure(f"{module}: {name}: unit must be a str, got {unit!r}")
    if goal is not None and not isinstance(goal, str):
        raise BadFigure(f"{module}: {name}: goal must be a str or None, got {goal!r}")
    detail = raw.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise BadFigure(f"{module}: {name}: detail must be a str, got {type(detail).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise BadFigure(f"{module}: {name}: value is {value}")
    return {
        "name": name, "value": value, "unit": unit, "goal": goal,
        "passed": check_goal(goal, value), "detail": detail, "module": module,
    }


def print_table(figures: list[dict[str, Any]], crashed: dict[str, str]) -> None:
    rows = [("name", "value", "unit", "goal", "result")]
    for f in figures:
        status = "-" if f["goal"] is None else ("pass" if f["passed"] else "FAIL")
        rows.append((f["name"], format_value(f["value"]), f["unit"], f["goal"] or "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    print("\n".join(lines))
    details = [f for f in figures if f["detail"]]
    if details:
        print("\ndetails:")
        for f in details:
            print(f"  {f['name']}: {f['detail']}")
    for module, error in crashed.items():
        last = [line for line in error.splitlines() if line.strip()][-1:] or [""]
        print(f"\nCRASHED: {module}: {last[0]} (the traceback is above)")


# --- discovery and the run ----------------------------------------------------------------------


def discover(bench_dir: Path = BENCH_DIR) -> list[Path]:
    return sorted(bench_dir.glob("bench_*.py"))


def load_module(path: Path) -> ModuleType:
    name = f"llmos_bench_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def matches(only: str | None, name: str) -> bool:
    """Does ``--only`` select ``name``? It holds one substring, or several separated by commas."""
    return only is None or any(part and part in name for part in only.split(","))


def selection(module: ModuleType, stem: str, only: str | None) -> tuple[bool, bool]:
    """(run it?, selected as a whole?) for ``--only``."""
    if matches(only, stem):
        return True, True
    figures = getattr(module, "FIGURES", ())
    return any(matches(only, f) for f in figures), False


def run_module(path: Path, ctx: BenchContext) -> tuple[list[dict[str, Any]], str | None]:
    """Figures of one module, and an error string if it crashed (figures are then those it gave)."""
    try:
        module = load_module(path)
    except Exception:
        if not matches(ctx.only, path.stem):
            ctx.log(f"{path.name}: not imported ({traceback.format_exc().strip().splitlines()[-1]}); "
                    f"skipped, as --only does not name it")
            return [], None
        return [], "import failed:\n" + traceback.format_exc()
    wanted, whole = selection(module, path.stem, ctx.only)
    if not wanted:
        return [], None
    run = getattr(module, "run", None)
    if not callable(run):
        return [], "has no run(ctx) function"
    ctx._module_selected = whole
    ctx.log(f"{path.name}: running")
    started = time.monotonic()
    error: str | None = None
    try:
        raw = run(ctx)
    except Exception as exc:
        error = "raised:\n" + traceback.format_exc()
        raw = getattr(exc, "figures", [])  # figures finished before the crash, if the module kept them
    finally:
        ctx._module_selected = True
    ctx.log(f"{path.name}: {'crashed' if error else 'done'} after {time.monotonic() - started:.1f} s")
    if not isinstance(raw, list):
        return [], f"run(ctx) returned {type(raw).__name__}, not a list of figures"
    figures: list[dict[str, Any]] = []
    try:
        for item in raw:
            figure = normalise(item, path.stem)
            if whole or matches(ctx.only, figure["name"]):
                figures.append(figure)
    except BadFigure as exc:
        return figures, str(exc)
    return figures, error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the llmos benchmarks (bench/bench_*.py).")
    parser.add_argument("--only", metavar="SUBSTRING", help="run modules / figures whose name contains this "
                        "(several: separated by commas)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help=f"results file (default {RESULTS_PATH})")
    parser.add_argument("--model", help="GGUF model: a path, or a known model's key such as 1.5b "
                        "(default: the embedded default model)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Never read the user's config or write into the user's data directory (as the tests do).
    with tempfile.TemporaryDirectory(prefix="llmos-bench-data-") as data_dir:
        os.environ["LLMOS_DATA_DIR"] = data_dir
        os.environ["LLMOS_CONFIG"] = str(Path(data_dir) / "no-config.toml")
        return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    from llmos.kernel.model_file import default_model_path, resolve_model

    model_path = resolve_model(args.model) if args.model else default_model_path()
    if not model_path.is_file():
        print(f"bench: no model at {model_path} (run `make` to install the embedded model)", file=sys.stderr)
        return 2
    modules = discover()
    if not modules:
        print(f"bench: no bench_*.py in {BENCH_DIR}", file=sys.stderr)
        return 2
    ctx = BenchContext(model_path=model_path, quick=args.quick, only=args.only)
    started, started_at = time.monotonic(), time.strftime("%Y-%m-%d %H:%M %z")
    load_before = os.getloadavg()
    ctx.log(f"{len(modules)} modules: {', '.join(p.name for p in modules)}; "
            f"{ctx.n_threads} threads, load average {load_before[0]:.2f}")
    figures: list[dict[str, Any]] = []
    crashed: dict[str, str] = {}
    try:
        for path in modules:
            got, error = run_module(path, ctx)
            figures += got
            if error is not None:
                crashed[path.name] = error
                print(f"bench: {path.name} crashed: {error}", file=sys.stderr)
    finally:
        ctx.close()
    names = [f["name"] for f in figures]
    for name in sorted({n for n in names if names.count(n) > 1}):
        crashed.setdefault("(harness)", "")
        crashed["(harness)"] += f"figure name {name!r} reported more than once; "
    if not figures and not crashed:
        print(f"bench: nothing matched --only {args.only!r}", file=sys.stderr)
        return 2
    load_after = os.getloadavg()
    print()
    print_table(figures, crashed)
    print(f"\nload average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"on {os.cpu_count()} CPUs (a shared machine: figures are ratios of interleaved runs)")
    run = {"started": started_at, "seconds": round(time.monotonic() - started, 1), "model": model_path.name,
           "cpus": os.cpu_count(), "threads": ctx.n_threads, "load": [round(load_before[0], 2), round(load_after[0], 2)],
           "quick": args.quick, "only": args.only, "crashed": sorted(crashed)}
    results = [{k: f[k] for k in ("name", "value", "unit", "goal", "passed", "detail", "module")} for f in figures]
    args.output.write_text(json.dumps({"run": run, "figures": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    if args.only is None:  # a partial run would replace the whole page with a part of it
        print(f"wrote {report.write(args.output)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
