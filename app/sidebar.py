"""The sidebar: past conversations from the journal, searchable, with rename and delete.

Each entry is a conversation tree (its branches together), newest activity first. Opening one
asks the window (``open_requested``) to show the tree's latest branch. Delete asks first.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout, QInputDialog, QLineEdit, QListWidget, QListWidgetItem, QMenu, QMessageBox, QPushButton,
    QVBoxLayout, QWidget,
)

from llmos.memory.journal import Journal, JournalError

log = logging.getLogger(__name__)

ID_ROLE = Qt.ItemDataRole.UserRole


def when(iso: str, now: datetime | None = None) -> str:
    """``14:05`` today, ``Mon 14:05`` this week, else ``2026-11-03``."""
    try:
        at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return iso
    now = (now or datetime.now(timezone.utc)).astimezone()
    if at.date() == now.date():
        return at.strftime("%H:%M")
    if (now - at).days < 7:
        return at.strftime("%a %H:%M")
    return at.strftime("%Y-%m-%d")


class Sidebar(QWidget):
    open_requested = Signal(str)  # a conversation id (the tree's root)
    new_requested = Signal()
    deleted = Signal(str)  # the root id of a deleted tree
    renamed = Signal(str, str)  # root id, new title
    failed = Signal(str)  # a one-line error for the window to show

    def __init__(self, journal: Journal | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.journal = journal
        self.setMinimumWidth(200)
        self.setMaximumWidth(340)
        self.new_button = QPushButton("+  New conversation")
        self.new_button.setToolTip("Ctrl+N")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search conversations (Ctrl+K)")
        self.search.setClearButtonEnabled(True)
        self.list = QListWidget()
        self.list.setObjectName("conversations")
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.setUniformItemSizes(True)
        self.list.setWordWrap(False)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 10, 4, 8)
        layout.setSpacing(8)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        self.rename_button = QPushButton("Rename")
        self.delete_button = QPushButton("Delete")
        row = QHBoxLayout()
        row.addWidget(self.rename_button)
        row.addWidget(self.delete_button)
        layout.addLayout(row)
        self.pending_confirm: QMessageBox | None = None
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(150)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        self.list.customContextMenuRequested.connect(self._menu)
        self.new_button.clicked.connect(self.new_requested.emit)
        self.rename_button.clicked.connect(lambda: self.rename_selected())
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        self.list.currentItemChanged.connect(lambda *_: self._update_buttons())
        self.current_root: str | None = None
        self.refresh()

    # --- the list ------------------------------------------------------------------------------

    def refresh(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        if self.journal is not None:
            try:
                trees = self.journal.trees(self.search.text())
            except JournalError as exc:
                self.failed.emit(str(exc))
                trees = []
            for tree in trees:
                title = tree["title"] or "(untitled)"
                branches = f"  ·  {tree['branches']} branches" if tree["branches"] > 1 else ""
                item = QListWidgetItem(f"{title}\n{when(tree['updated'])}{branches}")
                item.setData(ID_ROLE, tree["id"])
                item.setToolTip(title)
                self.list.addItem(item)
                if tree["id"] == self.current_root:
                    self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self._update_buttons()

    def ids(self) -> list[str]:
        return [self.list.item(i).data(ID_ROLE) for i in range(self.list.count())]

    def titles(self) -> list[str]:
        return [self.list.item(i).text().split("\n", 1)[0] for i in range(self.list.count())]

    def select(self, root: str | None) -> None:
        self.current_root = root
        for i in range(self.list.count()):
            if self.list.item(i).data(ID_ROLE) == root:
                self.list.blockSignals(True)
                self.list.setCurrentRow(i)
                self.list.blockSignals(False)
                break
        else:
            self.list.clearSelection()
        self._update_buttons()

    def _selected(self) -> str | None:
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item is not None else None

    def _update_buttons(self) -> None:
        chosen = self._selected() is not None
        self.rename_button.setEnabled(chosen)
        self.delete_button.setEnabled(chosen)

    def _activated(self, item: QListWidgetItem) -> None:
        cid = item.data(ID_ROLE)
        if cid and cid != self.current_root:
            self.open_requested.emit(cid)

    def _menu(self, pos) -> None:  # noqa: ANN001 (QPoint)
        item = self.list.itemAt(pos)
        if item is None:
            return
        self.list.setCurrentItem(item)
        menu = QMenu(self)
        menu.addAction("Open", lambda: self._activated(item))
        menu.addAction("Rename…", lambda: self.rename_selected())
        menu.addAction("Delete…", lambda: self.delete_selected())
        menu.popup(self.list.viewport().mapToGlobal(pos))

    # --- rename and delete ---------------------------------------------------------------------

    def rename_selected(self, title: str | None = None) -> None:
        cid = self._selected()
        if cid is None or self.journal is None:
            return
        if title is None:
            current = self.list.currentItem().text().split("\n", 1)[0]
            title, ok = QInputDialog.getText(self, "Rename conversation", "Title:", text=current)
            if not ok:
                return
        try:
            self.journal.rename(cid, title)
        except JournalError as exc:
            self.failed.emit(str(exc))
            return
        self.refresh()
        self.renamed.emit(cid, title)

    def delete_selected(self) -> QMessageBox | None:
        """Ask first (a non-blocking message box, ``pending_confirm``); Yes deletes the tree."""
        cid = self._selected()
        if cid is None or self.journal is None:
            return None
        title = self.list.currentItem().text().split("\n", 1)[0]
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete conversation",
                          f"Delete “{title}” and all its branches? This cannot be undone.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Yes).setText("Delete")
        box.setWindowModality(Qt.WindowModality.WindowModal)

        def answered(button) -> None:  # noqa: ANN001
            self.pending_confirm = None
            if box.standardButton(button) != QMessageBox.StandardButton.Yes:
                return
            try:
                self.journal.delete(cid)  # type: ignore[union-attr]
            except JournalError as exc:
                self.failed.emit(str(exc))
                return
            self.refresh()
            self.deleted.emit(cid)

        box.buttonClicked.connect(answered)
        self.pending_confirm = box
        box.open()
        return box
