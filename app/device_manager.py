"""The device manager: every device, the permissions it needs, what it holds; grant and revoke.

Grants are remembered in ``<data_dir>/grants.json`` (``kernel/grants.py``); a revoke also drops
this run's answer, so the device is asked again before its next call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from llmos.app.tables import InfoTable
if TYPE_CHECKING:
    from llmos.kernel.loop import Kernel

log = logging.getLogger(__name__)


class DeviceManager(QDialog):
    COLUMNS = ["device", "version", "calls", "needs", "granted", "status"]

    def __init__(self, kernel: "Kernel", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Devices")
        self.resize(760, 360)
        self.kernel = kernel
        self.table = InfoTable(self.COLUMNS, stretch=5)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.grant_button = QPushButton("Grant")
        self.revoke_button = QPushButton("Revoke")
        self.grant_button.setToolTip("Grant the selected device the permissions it needs (remembered)")
        self.revoke_button.setToolTip("Revoke every remembered permission of the selected device")
        row = QHBoxLayout()
        row.addWidget(self.message, 1)
        row.addWidget(self.grant_button)
        row.addWidget(self.revoke_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        self.grant_button.clicked.connect(lambda: self.grant(self.table.selected_key()))
        self.revoke_button.clicked.connect(lambda: self.revoke(self.table.selected_key()))
        self.refresh()

    @property
    def _policy(self):  # noqa: ANN202
        return self.kernel.dispatcher.policy

    def refresh(self) -> None:
        rows = []
        for device in self.kernel.registry.devices():
            held = self._policy.held(device)
            needs = [p.value for p in device.permissions]
            missing = [p for p in needs if p not in {h.value for h in held}]
            status = "ready" if not missing else "asks for " + ", ".join(missing)
            rows.append((device.name, device.version, len(device.calls), ", ".join(needs) or "—",
                         ", ".join(sorted(h.value for h in held)) or "—", status))
        for broken in self.kernel.registry.broken:
            rows.append((broken.name, "", 0, "", "", f"broken: {broken.error}"))
        self.table.set_rows(rows)

    def _device(self, name: str | None):  # noqa: ANN202
        if not name:
            return None
        try:
            return self.kernel.registry.get(name)
        except LookupError:
            return None

    def grant(self, name: str | None) -> None:
        device, store = self._device(name), self._policy.store
        if device is None or store is None:
            self.message.setText("Nothing to grant." if device is None else "Grants cannot be remembered here.")
            return
        self._change(device, lambda: store.grant(device.name, device.permissions), "grant",
                     f"Granted {device.name}: {', '.join(p.value for p in device.permissions) or 'nothing needed'}.")

    def revoke(self, name: str | None) -> None:
        device, store = self._device(name), self._policy.store
        if device is None or store is None:
            self.message.setText("Nothing to revoke.")
            return
        self._change(device, lambda: store.revoke(device.name), "revoke",
                     f"Revoked {device.name}'s remembered permissions; it asks again before its next call.")

    def _change(self, device, save, what: str, done: str) -> None:  # noqa: ANN001
        """Save a grant change, make this run ask afresh, and say what happened."""
        try:
            save()
        except OSError as exc:
            self.message.setText(f"Cannot save the {what}: {exc}")
            return
        self._policy.forget(device.name)
        self.message.setText(done)
        self.refresh()
