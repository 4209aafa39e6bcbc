"""Settings: model file (checked before switching), remote backend, context size, threads, voice
options, serving to other programs (`llmos serve` on the window's kernel), data directory; saved to the config file (``kernel/config.py``'s ``config.toml``).

The dialog only edits and validates; :meth:`SettingsDialog.accepted_config` is the new Config,
and the window decides whether the change needs a new kernel (model, backend, context, threads,
data directory) and builds it on a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
    QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from llmos.app.server.http import ServeError, check_bind
from llmos.kernel.config import Config, ConfigError, default_config_path
from llmos.kernel.model_file import ModelFileError, check_gguf, default_model_path, resolve_model

log = logging.getLogger(__name__)

ENGINE_KEYS = ("backend", "model", "base_url", "api_key", "remote_model", "n_ctx", "threads", "data_dir")
VOICE_PREFIXES = ("voice", "tts", "stt", "wake", "vad")


def voice_fields() -> list[dataclasses.Field]:
    """The config keys of the voice options (declared by the voice part of llmos)."""
    return [f for f in dataclasses.fields(Config) if f.name.startswith(VOICE_PREFIXES)]


def needs_new_kernel(old: Config, new: Config) -> bool:
    return any(getattr(old, k) != getattr(new, k) for k in ENGINE_KEYS)


# --- the config file ------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Plain keys first, then ``[tables]`` (enough for llmos's config: scalars, lists, nested dicts)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            body = to_toml(value, name + ".")
            plain = [line for line in body.split("\n") if line and not line.startswith("[")]
            if plain or not value:
                lines += ["", f"[{name}]"]
            lines.append(body)
    return "\n".join(line for line in lines).strip("\n") + "\n"


def save_config(values: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``values`` over the config file's keys (others, like ``mcp``, are kept)."""
    path = path or default_config_path()
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML ({exc}); fix or remove it first") from None
    defaults = Config()
    for key, value in values.items():
        if value == getattr(defaults, key) and key not in data:
            continue
        data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(to_toml(data), encoding="utf-8")
    tmp.replace(path)
    return path


# --- the dialog -----------------------------------------------------------------------------------


class SettingsDialog(QDialog):
    def __init__(self, config: Config, parent: QWidget | None = None, config_path: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self.config = config
        self.config_path = config_path
        self.backend = QComboBox()
        self.backend.addItem("Local model file (llama.cpp)", "llamacpp")
        self.backend.addItem("Remote server (OpenAI-compatible)", "openai")
        self.backend.setCurrentIndex(0 if config.backend == "llamacpp" else 1)
        self.model = QLineEdit(config.model)
        self.model.setPlaceholderText(f"embedded default: {default_model_path().name}; or 1.5b, or a GGUF file")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(browse)
        self.model_status = QLabel("")
        self.model_status.setWordWrap(True)
        self.base_url = QLineEdit(config.base_url)
        self.remote_model = QLineEdit(config.remote_model)
        self.api_key = QLineEdit(config.api_key)
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(512, 131072)
        self.n_ctx.setSingleStep(1024)
        self.n_ctx.setValue(config.n_ctx)
        self.n_ctx.setSuffix(" tokens")
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setValue(config.threads)
        self.threads.setSpecialValueText("all cores")
        self.data_dir = QLineEdit(config.data_dir)
        self.data_dir.setPlaceholderText(str(config.resolved_data_dir()))
        browse_dir = QPushButton("Browse…")
        browse_dir.clicked.connect(self._browse_dir)
        dir_row = QHBoxLayout()
        dir_row.addWidget(self.data_dir, 1)
        dir_row.addWidget(browse_dir)

        engine = QGroupBox("Model")
        form = QFormLayout(engine)
        form.addRow("Engine", self.backend)
        form.addRow("Model file", model_row)
        form.addRow("", self.model_status)
        form.addRow("Server URL", self.base_url)
        form.addRow("Server model", self.remote_model)
        form.addRow("API key", self.api_key)
        form.addRow("Context size", self.n_ctx)
        form.addRow("Threads", self.threads)
        self.serve_enabled = QCheckBox("Serve this model to other programs (an OpenAI-compatible API)")
        self.serve_enabled.setChecked(config.serve_enabled)
        self.serve_host = QLineEdit(config.serve_host)
        self.serve_port = QSpinBox()
        self.serve_port.setRange(1, 65535)
        self.serve_port.setValue(config.serve_port)
        self.serve_api_key = QLineEdit(config.serve_api_key)
        self.serve_api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.serve_api_key.setPlaceholderText("none (loopback only)")
        serving = QGroupBox("Serving")
        serve_form = QFormLayout(serving)
        serve_form.addRow(self.serve_enabled)
        serve_form.addRow("Address", self.serve_host)
        serve_form.addRow("Port", self.serve_port)
        serve_form.addRow("API key", self.serve_api_key)
        self.serve_enabled.toggled.connect(self._serving_changed)
        self._serving_changed(config.serve_enabled)
        storage = QGroupBox("Storage")
        QFormLayout(storage).addRow("Data directory", dir_row)
        self.voice_editors: dict[str, QWidget] = {}
        voice = QGroupBox("Voice")
        voice_form = QFormLayout(voice)
        for f in voice_fields():
            editor = self._editor(getattr(config, f.name), f.metadata)
            editor.setToolTip(f.metadata.get("help", ""))
            self.voice_editors[f.name] = editor
            voice_form.addRow(f.metadata.get("label") or f.name.replace("_", " ").capitalize(), editor)
        if not self.voice_editors:
            voice_form.addRow(QLabel("Voice options appear here with the voice mode."))
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b3261e;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.try_accept)
        buttons.rejected.connect(self.reject)
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        layout = QVBoxLayout(self)
        layout.addWidget(engine)
        layout.addWidget(voice)
        layout.addWidget(serving)
        layout.addWidget(storage)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.backend.currentIndexChanged.connect(lambda _i: self._engine_changed())
        self.model.editingFinished.connect(self.validate_model)
        self._engine_changed()
        self.result_config: Config | None = None

    @staticmethod
    def _editor(value: Any, meta: Any = None) -> QWidget:
        """An editor for a config value, shaped by its field's metadata (choices, range, unit)."""
        meta = meta or {}
        low, high = meta.get("range", (-1_000_000, 1_000_000))
        if isinstance(value, bool):
            box = QCheckBox()
            box.setChecked(value)
            return box
        if meta.get("choices"):
            combo = QComboBox()
            combo.addItems([str(c) for c in meta["choices"]])
            combo.setCurrentText(str(value))
            return combo
        if isinstance(value, int):
            spin = QSpinBox()
            spin.setRange(int(low), int(high))
            spin.setValue(value)
            spin.setSuffix(meta.get("unit", ""))
            return spin
        if isinstance(value, float):
            dspin = QDoubleSpinBox()
            dspin.setRange(float(low), float(high))
            dspin.setDecimals(2 if "range" in meta else 3)
            dspin.setSingleStep(0.05 if "range" in meta else 1.0)
            dspin.setValue(value)
            dspin.setSuffix(meta.get("unit", ""))
            return dspin
        return QLineEdit(str(value))

    @staticmethod
    def _read(editor: QWidget) -> Any:
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QComboBox):
            return editor.currentText()
        if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            return editor.value()
        assert isinstance(editor, QLineEdit)
        return editor.text()

    def _engine_changed(self) -> None:
        local = self.backend.currentData() == "llamacpp"
        for w in (self.model,):
            w.setEnabled(local)
        for w in (self.base_url, self.remote_model, self.api_key):
            w.setEnabled(not local)
        self.validate_model()

    def _serving_changed(self, on: bool) -> None:
        for w in (self.serve_host, self.serve_port, self.serve_api_key):
            w.setEnabled(on)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", str(Path(self.model.text() or
                                              default_model_path()).parent), "GGUF models (*.gguf);;All files (*)")
        if path:
            self.model.setText(path)
            self.validate_model()

    def _browse_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Data directory", self.data_dir.text() or
                                                str(self.config.resolved_data_dir()))
        if path:
            self.data_dir.setText(path)

    def validate_model(self) -> bool:
        """Check the chosen GGUF file now (header and size); the answer is shown under it."""
        if self.backend.currentData() != "llamacpp":
            self.model_status.setText("")
            return True
        path = self.model.text().strip() or str(default_model_path())
        try:
            header = check_gguf(resolve_model(path))  # a path, or a known model's key ("1.5b")
        except ModelFileError as exc:
            self.model_status.setText(f"✗ {exc}")
            self.model_status.setStyleSheet("color: #b3261e;")
            return False
        self.model_status.setText(f"✓ GGUF v{header.version}, {header.tensor_count} tensors")
        self.model_status.setStyleSheet("color: #1b7f4b;")
        return True

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend.currentData(), "model": self.model.text().strip(),
            "base_url": self.base_url.text().strip(), "remote_model": self.remote_model.text().strip(),
            "api_key": self.api_key.text(), "n_ctx": self.n_ctx.value(), "threads": self.threads.value(),
            "data_dir": self.data_dir.text().strip(),
            "serve_enabled": self.serve_enabled.isChecked(), "serve_host": self.serve_host.text().strip(),
            "serve_port": self.serve_port.value(), "serve_api_key": self.serve_api_key.text(),
        }
        out.update({name: self._read(editor) for name, editor in self.voice_editors.items()})
        return out

    def try_accept(self) -> None:
        """Validate, save to the config file, and close; a problem is shown and nothing is lost."""
        if not self.validate_model():
            self.error.setText("The model file cannot be used; choose another one (nothing was changed).")
            return
        values = self.values()
        if values["backend"] == "openai" and not values["base_url"].startswith(("http://", "https://")):
            self.error.setText("The server URL must start with http:// or https://.")
            return
        try:
            if values["serve_enabled"]:
                check_bind(values["serve_host"], values["serve_api_key"] or None)
        except ServeError as exc:
            self.error.setText(f"Serving: {exc}.")
            return
        try:
            new = dataclasses.replace(self.config, **values)
            save_config(values, self.config_path)
        except (ConfigError, OSError, TypeError) as exc:
            self.error.setText(f"Cannot save the settings: {exc}")
            return
        self.result_config = new
        self.accept()
