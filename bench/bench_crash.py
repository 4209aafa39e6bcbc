"""What crash safety costs (llmos issue 11, item 3).

- ``supervisor_overhead_ms``: ``llmos --help`` through the console script (the supervisor forks
  the command line into a child and waits) less the same script run unsupervised
  (``LLMOS_SUPERVISED=1``), the median of interleaved pairs (goal <= 50 ms; on a loaded machine
  most of it is the scheduler handing the CPU to the child and back: the CPU time it adds is in
  the details, with ``python -m llmos.app.cli --help``).
- ``journal_piece_commit_us``: committing one streamed piece of an answer (the journal writes
  every piece to the WAL, and fsyncs one every 16 pieces or 0.25 s), the mean over a
  600-piece answer on a scripted stream, less the same stream with no journal (goal <= 2000 us:
  a tenth of a token's time on the embedded model).

Run alone: ``.venv/bin/python bench/run.py --only crash``.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = ("supervisor_overhead_ms", "journal_piece_commit_us")
PIECES = 600


def _costs(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, every process of the run) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _supervisor(ctx: "BenchContext") -> dict[str, Any]:
    script = str(Path(sys.executable).with_name("llmos"))
    env = {k: v for k, v in os.environ.items() if k != "LLMOS_SUPERVISED"}
    argvs = {"supervised": ([script, "--help"], env),
             "unsupervised": ([script, "--help"], {**env, "LLMOS_SUPERVISED": "1"}),
             "module": ([sys.executable, "-m", "llmos.app.cli", "--help"], env)}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in argvs}
    _costs(*argvs["supervised"])  # warm the file cache
    for _ in range(ctx.reps(30, 8)):
        for name, (argv, run_env) in argvs.items():
            runs[name].append(_costs(argv, run_env))
    paired = [(s[0] - u[0], s[1] - u[1]) for s, u in zip(runs["supervised"], runs["unsupervised"])]
    wall = statistics.median(p[0] for p in paired) * 1000
    cpu = statistics.median(p[1] for p in paired) * 1000
    med = {name: statistics.median(r[0] for r in times) * 1000 for name, times in runs.items()}
    return {"name": "supervisor_overhead_ms", "value": round(wall, 1), "unit": "ms", "goal": "<= 50",
            "detail": f"median of {len(paired)} interleaved pairs; CPU time {cpu:+.1f} ms; llmos --help "
                      f"{med['supervised']:.0f} ms supervised, {med['unsupervised']:.0f} ms unsupervised, "
                      f"python -m llmos.app.cli --help {med['module']:.0f} ms (medians)"}


def _turn_seconds(journaled: bool, folder: Path) -> float:
    from llmos.app.boot import attach_journal
    from llmos.kernel.backends.scripted import ScriptedBackend
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry
    from llmos.kernel.turn import TurnOptions

    answer = " ".join(f"w{i}" for i in range(PIECES))
    kernel = Kernel(ScriptedBackend([f"ANSWER: {answer}"]), DeviceRegistry(), TurnOptions(max_answer_tokens=PIECES + 8))
    journal = attach_journal(kernel, folder / "journal.sqlite3") if journaled else None
    kernel.start()
    try:
        kernel.wait_ready(30)
        pid = kernel.spawn("bench")
        started = time.perf_counter()
        result = kernel.submit(pid, "Count.").result(120)
        seconds = time.perf_counter() - started
    finally:
        kernel.shutdown()
        if journal is not None:
            journal.close()
    assert result.answer == answer, "the scripted answer was cut"
    return seconds


def _journal(ctx: "BenchContext") -> dict[str, Any]:
    with_journal: list[float] = []
    without: list[float] = []
    for _ in range(ctx.reps(5, 2)):
        with tempfile.TemporaryDirectory(prefix="llmos-bench-journal-") as folder:
            with_journal.append(_turn_seconds(True, Path(folder)))
        without.append(_turn_seconds(False, Path(".")))
    per_piece = (statistics.median(with_journal) - statistics.median(without)) / PIECES * 1e6
    return {"name": "journal_piece_commit_us", "value": round(per_piece, 1), "unit": "us", "goal": "<= 2000",
            "detail": f"a {PIECES}-piece scripted answer: {statistics.median(with_journal):.3f} s journaled, "
                      f"{statistics.median(without):.3f} s not (medians of {len(without)})"}


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    figures = []
    if ctx.wants("supervisor_overhead_ms"):
        ctx.log("llmos --help, supervised and not")
        figures.append(_supervisor(ctx))
    if ctx.wants("journal_piece_commit_us"):
        ctx.log(f"a {PIECES}-piece answer, journaled and not")
        figures.append(_journal(ctx))
    return figures
