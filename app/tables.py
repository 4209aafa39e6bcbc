"""A read-only table filled from rows of strings: what the inspectors and managers show."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget


class InfoTable(QTableWidget):
    def __init__(self, headers: Sequence[str], stretch: int | None = None, parent: QWidget | None = None) -> None:
        super().__init__(0, len(headers), parent)
        self.setHorizontalHeaderLabels(list(headers))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.setWordWrap(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        if stretch is not None:
            header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)

    def set_rows(self, rows: Sequence[Sequence[object]]) -> None:
        """Replace the rows, keeping the selected row (by its first cell) when it is still there."""
        keep = self.selected_key()
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                item = self.item(r, c)
                text = "" if value is None else str(value)
                if item is None:
                    item = QTableWidgetItem(text)
                    self.setItem(r, c, item)
                elif item.text() != text:
                    item.setText(text)
                item.setToolTip(text if len(text) > 40 else "")
        if keep is not None:
            for r in range(self.rowCount()):
                if self.item(r, 0).text() == keep:
                    self.selectRow(r)
                    break

    def selected_key(self) -> str | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        if not rows:
            return None
        item = self.item(rows[0].row(), 0)
        return item.text() if item is not None else None

    def column(self, c: int) -> list[str]:
        return [self.item(r, c).text() if self.item(r, c) else "" for r in range(self.rowCount())]
