"""The OS made visible: the RAM gauge, the RAM inspector and the task manager.

RAM is a process's context window. Its report (``Kernel.ram``) is answered on the kernel thread
between slices, so it is always asked through ``KernelBridge.ram`` (a worker thread); processes
are a snapshot of the table (``Kernel.processes``), cheap enough for the GUI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget,
)

from llmos.app.bridge import KernelBridge
from llmos.app.tables import InfoTable
if TYPE_CHECKING:
    from llmos.kernel.paging import RamReport

log = logging.getLogger(__name__)


def kilo(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


class RamGauge(QWidget):
    """``RAM 1.2k / 8.2k``: tokens in the context window over its size; click opens the inspector."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("RAM –")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setTextVisible(False)
        self.bar.setFixedWidth(90)
        self.bar.setMaximumHeight(10)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        self.report: "RamReport | None" = None
        self.setToolTip("Tokens in this conversation's context window (RAM) over its size")

    def show_report(self, report: "RamReport | None") -> None:
        self.report = report
        if report is None:
            self.label.setText("RAM –")
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
            return
        self.bar.setRange(0, max(1, report.n_ctx))
        self.bar.setValue(min(report.tokens, report.n_ctx))
        self.label.setText(f"RAM {kilo(report.tokens)} / {kilo(report.n_ctx)}")
        self.setToolTip(f"{report.tokens:,} tokens resident of {report.n_ctx:,} (budget {report.budget:,}); "
                        f"{len(report.pages)} pages, {sum(r.direction == 'out' for r in report.paging)} page-outs")


class RamInspector(QDialog):
    """Resident pages and paging records (what left, when, why) of the window's chat process."""

    def __init__(self, bridge: KernelBridge, pid_of: Callable[[], int | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RAM inspector")
        self.resize(860, 520)
        self.bridge, self._pid_of = bridge, pid_of
        self.summary = QLabel("…")
        self.pages = InfoTable(["#", "kind", "role", "tokens", "pinned", "call", "trusted", "preview"], stretch=7)
        self.paging = InfoTable(["when", "direction", "reason", "messages", "tokens", "summaries"], stretch=5)
        self.refresh_button = QPushButton("Refresh")
        split = QSplitter(Qt.Orientation.Vertical)
        top, bottom = QWidget(), QWidget()
        tl, bl = QVBoxLayout(top), QVBoxLayout(bottom)
        tl.setContentsMargins(0, 0, 0, 0)
        bl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(QLabel("<b>Resident pages</b> (in the context window now)"))
        tl.addWidget(self.pages)
        bl.addWidget(QLabel("<b>Paged</b> (left the window for disk, or came back)"))
        bl.addWidget(self.paging)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setSizes([320, 160])
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        row.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(split, 1)
        self.refresh_button.clicked.connect(self.refresh)
        self.report: "RamReport | None" = None
        self.error: str | None = None

    def refresh(self) -> None:
        pid = self._pid_of()
        if pid is None:
            self.summary.setText("No chat process yet (the model is loading).")
            return
        self.summary.setText("Asking the kernel …")
        self.bridge.ram(pid, self.show_report)

    def show_report(self, report: "RamReport | None", error: str | None) -> None:
        self.report, self.error = report, error
        if report is None:
            self.summary.setText(f"Cannot read RAM: {error}")
            return
        outs = [r for r in report.paging if r.direction == "out"]
        self.summary.setText(
            f"Process {report.pid}: {report.tokens:,} tokens resident of {report.n_ctx:,} "
            f"(budget {report.budget:,}) · {len(report.pages)} pages · paged out {sum(r.messages for r in outs)} "
            f"messages in {len(outs)} evictions")
        self.pages.set_rows([(p.index, p.kind, p.role, p.tokens, "yes" if p.pinned else "", p.call or "",
                              "yes" if p.trusted else "untrusted", p.preview) for p in report.pages])
        self.pages.scrollToBottom()
        self.paging.set_rows([
            (datetime.fromtimestamp(r.at).strftime("%H:%M:%S"), r.direction, r.reason, r.messages,
             f"{r.tokens_before:,} → {r.tokens_after:,}" if r.direction == "out" else "",
             " | ".join(r.summaries)) for r in report.paging])


class TaskManager(QDialog):
    """Every process: state, priority, tokens, model time; stop its turn or kill it."""

    COLUMNS = ["pid", "name", "state", "priority", "messages", "tokens", "model time", "conversation", "error"]

    def __init__(self, bridge: KernelBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Task manager")
        self.resize(760, 320)
        self.bridge = bridge
        self.table = InfoTable(self.COLUMNS, stretch=8)
        self.stop_button = QPushButton("Stop turn")
        self.kill_button = QPushButton("Kill process")
        self.stop_button.setToolTip("Interrupt the selected process's current turn")
        self.kill_button.setToolTip("End the selected process")
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.stop_button)
        row.addWidget(self.kill_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        self.stop_button.clicked.connect(lambda: self._act(self.bridge.stop))
        self.kill_button.clicked.connect(lambda: self._act(self.bridge.kill))
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self.refresh)
        bridge.process_state_changed.connect(lambda _e: self.refresh() if self.isVisible() else None)
        self.refresh()

    def showEvent(self, event) -> None:  # noqa: N802, ANN001 (Qt API)
        self.refresh()
        self.timer.start()
        super().showEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802, ANN001 (Qt API)
        self.timer.stop()
        super().hideEvent(event)

    def rows(self) -> list[dict]:
        for _ in range(3):  # a snapshot of a table the kernel thread may be changing
            try:
                return self.bridge.kernel.processes()
            except RuntimeError:
                continue
        return []

    def refresh(self) -> None:
        self.table.set_rows([
            (p["pid"], p["name"], p["state"], p["priority"], p["messages"], p["tokens_generated"],
             f"{p['model_seconds']:.1f} s", str(p.get("conversation") or "")[:12], p.get("error") or "")
            for p in self.rows()])

    def select_pid(self, pid: int) -> None:
        for r, text in enumerate(self.table.column(0)):
            if text == str(pid):
                self.table.selectRow(r)

    def _act(self, action) -> None:  # noqa: ANN001
        key = self.table.selected_key()
        if key is not None:
            action(int(key))
            self.refresh()
