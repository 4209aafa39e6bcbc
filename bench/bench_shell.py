"""Desktop shell benchmarks: the UI never freezes, and the window shows at once.

- ``shell_stall_real_ms``: the longest gap in the GUI event loop (a 5 ms QTimer's ticks, less
  its interval) while the real model streams a Markdown reply into the window (goal <= 50).
- ``shell_stall_scripted_ms``: the same while a scripted model streams an 800-word Markdown
  reply as fast as it can (the UI's own cost, at many tokens per second; goal <= 50).
  The idle loop's longest gap, measured just before in the same run, is in the details: the
  noise floor of this shared machine.
- ``shell_stall_{real,scripted}_over_headless_ms``: the same turn run with no window right after
  (the event loop measured the same way): the stall the window adds, side by side (goal <= 50).
- ``shell_launch_to_window_s``: from starting ``llmos gui`` (a new Python process, offscreen)
  to the first event-loop turn with the window shown (median of runs; goal <= 1.5). The
  kernel (devices, journal, backend) is built behind the shown window; a bare PySide6 window
  launched in the same run is in the details (the floor on this machine).
- ``shell_stop_ms``: from Stop (the Esc key's slot) while a scripted reply streams one word per
  30 ms in a single long slice, to the window free again (median of runs; goal <= 250).
  tests/app/test_window_shell.py checks that the reply stops within its slice, without a clock.

Run alone: ``.venv/bin/python bench/run.py --only shell``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = ("shell_stall_real_ms", "shell_stall_scripted_ms", "shell_launch_to_window_s",
           "shell_stall_real_over_headless_ms", "shell_stall_scripted_over_headless_ms", "shell_stop_ms")
TICK_MS = 5

LAUNCH = r"""
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

app = QApplication(sys.argv[:1])

def check():
    for w in app.topLevelWidgets():
        if type(w).__name__ == "ChatWindow" and w.isVisible():
            print("SHOWN", flush=True)
            w.close()
            return
    QTimer.singleShot(1, check)

QTimer.singleShot(0, check)
from llmos.app.cli import main
sys.exit(main(["gui"]))
"""


BARE = r"""
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow

app = QApplication(sys.argv[:1])
window = QMainWindow()
window.show()
QTimer.singleShot(0, lambda: (print("SHOWN", flush=True), window.close()))
sys.exit(app.exec())
"""


def _app() -> Any:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication(sys.argv[:1])


def longest_gap_ms(app: Any, until: Callable[[], bool], timeout_s: float) -> tuple[float, int]:
    """Run the event loop until ``until()``; the longest gap between 5 ms ticks, less 5 ms."""
    from PySide6.QtCore import QTimer

    stamps: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not until() and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.0005)
    finally:
        timer.stop()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return (max(gaps) * 1000 - TICK_MS if gaps else float("nan")), len(stamps)


def _window(app: Any, kernel: Any) -> Any:
    from llmos.app.window import ChatWindow

    window = ChatWindow(kernel)
    window.resize(1100, 760)
    window.show()
    app.processEvents()
    return window


def _stream_once(app: Any, window: Any, text: str, timeout_s: float) -> tuple[float, int, int]:
    """Send ``text``, wait for the process, measure the stall until the reply is complete."""
    tokens: list[str] = []
    window.bridge.token.connect(lambda pid, piece: tokens.append(piece))
    longest_gap_ms(app, lambda: window.pid is not None, 120.0)
    window.input.setPlainText(text)
    window.send()
    stall, ticks = longest_gap_ms(app, lambda: not window.busy, timeout_s)
    return stall, ticks, len(tokens)


def _headless(app: Any, kernel: Any, text: str, timeout_s: float) -> float:
    """The same turn with no window: the event loop's longest gap from the machine and the kernel
    alone (the baseline the window's figure is read against)."""
    kernel.wait_ready(120)
    pid = kernel.spawn("chat")
    future = kernel.submit(pid, text)
    stall, _ = longest_gap_ms(app, future.done, timeout_s)
    return stall


def _scripted(ctx: "BenchContext", app: Any) -> dict[str, Any]:
    from llmos.kernel.backends.scripted import ScriptedBackend
    from llmos.kernel.loop import Kernel
    from llmos.kernel.turn import TurnOptions

    words = []
    for i in range(800):
        words.append(f"**word{i}**" if i % 17 == 0 else f"word{i}")
        if i % 60 == 59:
            words.append("\n\n- a list item\n- another\n\n```python\nprint('code')\n```\n\n")
    reply = "ANSWER: " + " ".join(words)
    runs, baselines = [], []
    for _ in range(ctx.reps(3, 1)):  # interleaved: with the window, then the same turn headless
        kernel = Kernel(ScriptedBackend([reply], delay_per_token=0.002), ctx.registry(),
                        TurnOptions(max_answer_tokens=4000)).start()
        window = _window(app, kernel)
        try:
            runs.append(_stream_once(app, window, "Talk for a long time", 120.0))
        finally:
            window.close()
            kernel.shutdown(timeout=10.0)
        kernel = Kernel(ScriptedBackend([reply], delay_per_token=0.002), ctx.registry(),
                        TurnOptions(max_answer_tokens=4000)).start()
        try:
            baselines.append(_headless(app, kernel, "Talk for a long time", 120.0))
        finally:
            kernel.shutdown(timeout=10.0)
    return {"stall": max(r[0] for r in runs), "runs": runs, "baseline": max(baselines)}


def _real(ctx: "BenchContext", app: Any) -> dict[str, Any]:
    from llmos.kernel.loop import Kernel
    from llmos.kernel.turn import TurnOptions

    options = TurnOptions(max_answer_tokens=ctx.reps(160, 64))
    text = "Write a short story about a lighthouse keeper, then a Markdown list of three lessons from it."
    kernel = Kernel(ctx.backend(), ctx.registry(), options).start()
    window = _window(app, kernel)
    try:
        run = _stream_once(app, window, text, 600.0)
    finally:
        window.close()
        kernel.shutdown(timeout=120.0, close_backend=False)
    kernel = Kernel(ctx.backend(), ctx.registry(), options).start()
    try:
        baseline = _headless(app, kernel, text, 600.0)
    finally:
        kernel.shutdown(timeout=120.0, close_backend=False)
    return {"stall": run[0], "run": run, "baseline": baseline}


def _stop_once(ctx: "BenchContext", app: Any) -> float:
    """Stop a streaming reply from the window; ms until the window is free again."""
    from llmos.kernel.backends.scripted import ScriptedBackend
    from llmos.kernel.loop import Kernel
    from llmos.kernel.turn import TurnOptions

    words = " ".join(f"word{i}" for i in range(400))
    kernel = Kernel(ScriptedBackend([f"ANSWER: {words}"], delay_per_token=0.03), ctx.registry(),
                    TurnOptions(slice_tokens=1000)).start()  # one slice would be the whole answer
    window = _window(app, kernel)
    try:
        longest_gap_ms(app, lambda: window.pid is not None, 60.0)
        window.input.setPlainText("Talk for a long time")
        window.send()
        longest_gap_ms(app, lambda: "word3" in window.view.plain_text(), 60.0)
        started = time.perf_counter()
        window.stop()
        longest_gap_ms(app, lambda: not window.busy, 60.0)
        if window.busy:
            raise RuntimeError("the window was still busy 60 s after Stop")
        return 1000 * (time.perf_counter() - started)
    finally:
        window.close()
        kernel.shutdown(timeout=10.0)


def _launch_once(script: str = LAUNCH) -> float:
    with tempfile.TemporaryDirectory(prefix="llmos-bench-launch-") as data:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LLMOS_DATA_DIR": data,
               "LLMOS_CONFIG": str(Path(data) / "none.toml")}
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, text=True)
        shown = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "SHOWN":
                    shown = time.perf_counter() - started
                    break
        finally:  # the model is still loading in there: do not wait for it
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if shown is None:
            raise RuntimeError(f"llmos gui exited ({proc.returncode}) without showing the window")
        return shown


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    figures: list[dict[str, Any]] = []
    app = _app()
    idle, _ = longest_gap_ms(app, lambda: False, 1.0)
    if ctx.wants("shell_stall_scripted_ms"):
        ctx.log("shell: streaming a scripted 800-word Markdown reply")
        scripted = _scripted(ctx, app)
        runs = scripted["runs"]
        figures.append({"name": "shell_stall_scripted_ms", "value": round(scripted["stall"], 1), "unit": "ms",
                        "goal": "<= 50",
                        "detail": f"worst of {len(runs)} runs; per run (stall ms, ticks, tokens): "
                                  f"{[(round(s, 1), t, n) for s, t, n in runs]}; the same turns with no "
                                  f"window: {scripted['baseline']:.1f} ms; idle loop {idle:.1f} ms"})
        figures.append({"name": "shell_stall_scripted_over_headless_ms",
                        "value": round(scripted["stall"] - scripted["baseline"], 1), "unit": "ms", "goal": "<= 50",
                        "detail": "what the window adds to the longest stall (window run less headless run)"})
    if ctx.wants("shell_stall_real_ms"):
        ctx.log("shell: streaming a real-model reply into the window")
        real = _real(ctx, app)
        stall, ticks, tokens = real["run"]
        figures.append({"name": "shell_stall_real_ms", "value": round(stall, 1), "unit": "ms", "goal": "<= 50",
                        "detail": f"{tokens} tokens streamed, {ticks} ticks; the same turn with no window: "
                                  f"{real['baseline']:.1f} ms; idle loop {idle:.1f} ms"})
        figures.append({"name": "shell_stall_real_over_headless_ms",
                        "value": round(stall - real["baseline"], 1), "unit": "ms", "goal": "<= 50",
                        "detail": "what the window adds to the longest stall (window run less headless run)"})
    if ctx.wants("shell_stop_ms"):
        ctx.log("shell: stopping a streaming reply")
        stops = [_stop_once(ctx, app) for _ in range(ctx.reps(5, 2))]
        figures.append({"name": "shell_stop_ms", "value": round(statistics.median(stops), 1), "unit": "ms",
                        "goal": "<= 250", "detail": f"median of {len(stops)}: {[round(t, 1) for t in stops]}; "
                                                    "a scripted word per 30 ms, one slice for the whole reply"})
    if ctx.wants("shell_launch_to_window_s"):
        ctx.log("shell: launching `llmos gui` to the window shown")
        times, bare = [], []
        for _ in range(ctx.reps(3, 1)):  # interleaved with a bare PySide6 window: the machine's floor
            times.append(_launch_once())
            bare.append(_launch_once(BARE))
        value, floor = statistics.median(times), statistics.median(bare)
        figures.append({"name": "shell_launch_to_window_s", "value": round(value, 3), "unit": "s", "goal": "<= 1.5",
                        "detail": f"median of {len(times)}: {[round(t, 3) for t in times]}; a bare PySide6 "
                                  f"QMainWindow in the same run: {floor:.3f} s (llmos/bare {value / floor:.2f}x)"})
    return figures
