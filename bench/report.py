"""docs/benchmarks.md from bench/results.json: the figures of the last full ``make bench`` run.

Usage::

    python3 bench/report.py                          # bench/results.json -> docs/benchmarks.md
    python3 bench/report.py RESULTS.json -o OUT.md

Standard library only (it imports nothing of llmos), so it runs without the venv. ``bench/run.py``
calls :func:`write` at the end of a run without ``--only``. With no results file it writes the
page that says how to make one, and exits 0: the page is then still true.

``results.json`` is ``{"run": {...}, "figures": [...]}`` as ``bench/run.py`` writes it; a bare list
of figures (the format before the ``run`` record) is read too. A figure is ``name``, ``value``,
``unit``, ``goal``, ``passed``, ``detail`` and, when known, ``module`` (``bench_<topic>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "results.json"
REPORT_PATH = BENCH_DIR.parent / "docs" / "benchmarks.md"

HOW = """\
`make bench` runs every `bench/bench_*.py` on the embedded model, prints a table, writes
`bench/results.json` and, when the run was complete (no `--only`), this page
(`bench/report.py`). `make bench ARGS='--only memory'` runs the modules or figures whose name
holds `memory` and leaves this page as it is; `python3 bench/report.py` writes it again from
`bench/results.json` at any time. `bench/run.py`'s docstring says how to add a benchmark.

The machine a run was made on matters: on a shared machine the figures are ratios of
interleaved repetitions or medians, and the load average is recorded with the run."""


class ResultsError(Exception):
    """A results file that cannot be read as figures; one line."""


def format_value(value: float) -> str:
    """A figure's value as the tables show it (also bench/run.py's printed table)."""
    magnitude = abs(value)
    if magnitude == 0 or 0.01 <= magnitude < 1e6:
        return f"{value:.3f}" if magnitude < 100 else f"{value:.1f}"
    return f"{value:.3g}"


def load(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run record and the figures of a results file (raises ResultsError)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from None
    run, figures = ({}, data) if isinstance(data, list) else (data.get("run") or {}, data.get("figures"))
    if not isinstance(figures, list) or not all(isinstance(f, dict) and "name" in f and "value" in f
                                                for f in figures):
        raise ResultsError(f"{path} holds no list of figures (name, value, unit, goal, ...)")
    return run, figures


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _result(figure: dict[str, Any]) -> str:
    if figure.get("goal") is None:
        return "-"
    return "pass" if figure.get("passed") else "**missed**"


def _run_lines(run: dict[str, Any]) -> list[str]:
    if not run:
        return ["The results file records no machine (written before `bench/run.py` kept a run record)."]
    facts = [f"started {run['started']}" if run.get("started") else "",
             f"{run['seconds']:.0f} s" if isinstance(run.get("seconds"), (int, float)) else "",
             f"model `{run['model']}`" if run.get("model") else "",
             f"{run['cpus']} CPUs, {run['threads']} threads" if run.get("cpus") else "",
             "load average (1 min) {:.2f} before, {:.2f} after".format(*run["load"])
             if isinstance(run.get("load"), list) and len(run["load"]) == 2 else "",
             "`--quick`" if run.get("quick") else "",
             f"`--only {run['only']}`" if run.get("only") else ""]
    lines = ["Run: " + "; ".join(f for f in facts if f) + "."]
    if run.get("crashed"):
        lines.append(f"Crashed in this run (their figures are missing or partial): {', '.join(run['crashed'])}.")
    return lines


def _module_sections(figures: Iterable[dict[str, Any]]) -> list[str]:
    by_module: dict[str, list[dict[str, Any]]] = {}
    for figure in figures:
        by_module.setdefault(figure.get("module") or "figures", []).append(figure)
    lines: list[str] = []
    for module, group in by_module.items():
        lines += ["", f"## {module}", "", "| figure | value | unit | goal | result |", "|---|---|---|---|---|"]
        lines += [f"| `{_cell(f['name'])}` | {format_value(float(f['value']))} | {_cell(f.get('unit', ''))} "
                  f"| {_cell(f.get('goal') or '-')} | {_result(f)} |" for f in group]
        details = [f for f in group if f.get("detail")]
        if details:
            lines.append("")
            lines += [f"- `{f['name']}`: {_cell(f['detail'])}" for f in details]
    return lines


def render(run: dict[str, Any] | None, figures: list[dict[str, Any]] | None, source: str) -> str:
    """The page: the figures by module, or (``figures`` None) how to make them."""
    lines = ["# Benchmarks", ""]
    if figures is None:
        lines += ["No benchmark results are in the repository yet: `bench/results.json` is written by",
                  "each run and not committed. This page is generated; after a full run, commit it.", "",
                  HOW, "",
                  "Figures measured in earlier sessions, with the machine notes they were taken under,",
                  "are kept with the design choices they decided in [decisions.md](decisions.md)."]
        return "\n".join(lines) + "\n"
    with_goal = [f for f in figures if f.get("goal") is not None]
    missed = [f["name"] for f in with_goal if not f.get("passed")]
    lines += [f"Generated by `bench/report.py` from `{source}`; do not edit by hand (run it again).", ""]
    lines += _run_lines(run or {})
    lines += ["", f"{len(figures)} figure{'s' * (len(figures) != 1)}, {len(with_goal)} with a goal, {len(missed)} missed"
              + (f": {', '.join(f'`{m}`' for m in missed)}." if missed else ".")]
    lines += _module_sections(figures)
    lines += ["", "## How these are made", "", HOW]
    return "\n".join(lines) + "\n"


def write(results: Path = RESULTS_PATH, output: Path = REPORT_PATH) -> Path:
    """Write ``output`` from ``results`` (or the how-to page when there is none); returns ``output``."""
    try:
        source = str(results.resolve().relative_to(BENCH_DIR.parent))
    except ValueError:
        source = str(results)
    if results.is_file():
        run, figures = load(results)
        text = render(run, figures, source)
    else:
        text = render(None, None, source)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/benchmarks.md from bench/results.json.")
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS_PATH,
                        help=f"results file (default {RESULTS_PATH})")
    parser.add_argument("-o", "--output", type=Path, default=REPORT_PATH, help=f"page to write (default {REPORT_PATH})")
    args = parser.parse_args(argv)
    try:
        written = write(args.results, args.output)
    except (ResultsError, OSError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    note = "" if args.results.is_file() else f" (no {args.results}: the page says how to make one)"
    print(f"wrote {written}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
