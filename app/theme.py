"""Light and dark: the colours of the shell, following the system's colour scheme.

``apply_theme(app)`` sets the Fusion style and a palette for the system's scheme (Qt's
``styleHints().colorScheme()``), and keeps following it. Widgets ask :func:`current_theme` for the
few colours a palette has no role for (bubbles, cards, badges) and re-style themselves on
``QEvent.PaletteChange``.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

BASE_POINT_SIZE = 11


@dataclass(frozen=True)
class Theme:
    dark: bool
    window: str
    text: str
    dim: str
    user_bubble: str
    model_bubble: str
    card: str
    card_border: str
    accent: str
    user_name: str
    model_name: str
    error: str
    untrusted: str
    trusted: str
    code: str


LIGHT = Theme(False, window="#f6f7f9", text="#1d1f23", dim="#6b7078", user_bubble="#e3edfb",
              model_bubble="#ffffff", card="#f1f3f6", card_border="#d9dde3", accent="#2f6fde",
              user_name="#1f5fbf", model_name="#1b7f4b", error="#b3261e", untrusted="#b35c00",
              trusted="#1b7f4b", code="#eef0f3")
DARK = Theme(True, window="#1e1f22", text="#e6e7ea", dim="#9a9fa8", user_bubble="#25344d",
             model_bubble="#2a2c30", card="#26282c", card_border="#3a3d43", accent="#6ea0ff",
             user_name="#8db4ff", model_name="#6fd39f", error="#ff8a80", untrusted="#ffb560",
             trusted="#6fd39f", code="#1b1c1f")


def system_is_dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def current_theme() -> Theme:
    """The theme of the application palette now (dark when its window colour is dark)."""
    app = QGuiApplication.instance()
    if app is None:
        return LIGHT
    return DARK if QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128 else LIGHT


def palette_for(theme: Theme) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    base = QColor("#17181a") if theme.dark else QColor("#ffffff")
    button = QColor("#2d2f33") if theme.dark else QColor("#eceef1")
    for r, c in ((role.Window, theme.window), (role.WindowText, theme.text), (role.Base, base.name()),
                 (role.AlternateBase, theme.card), (role.Text, theme.text), (role.Button, button.name()),
                 (role.ButtonText, theme.text), (role.Highlight, theme.accent),
                 (role.HighlightedText, "#ffffff"), (role.ToolTipBase, theme.card),
                 (role.ToolTipText, theme.text), (role.PlaceholderText, theme.dim), (role.Link, theme.accent)):
        p.setColor(r, QColor(c))
    p.setColor(QPalette.ColorGroup.Disabled, role.ButtonText, QColor(theme.dim))
    p.setColor(QPalette.ColorGroup.Disabled, role.Text, QColor(theme.dim))
    p.setColor(QPalette.ColorGroup.Disabled, role.WindowText, QColor(theme.dim))
    return p


def apply_theme(app: QApplication, dark: bool | None = None) -> Theme:
    """Fusion + the palette of the system scheme (or of ``dark``); follows later scheme changes
    when ``dark`` is None."""
    app.setStyle("Fusion")
    theme = (DARK if system_is_dark() else LIGHT) if dark is None else (DARK if dark else LIGHT)
    app.setPalette(palette_for(theme))
    if dark is None and not app.property("llmos_follows_scheme"):
        app.setProperty("llmos_follows_scheme", True)
        QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_theme(app))
    return theme
