"""The conversation as the window shows it: message bubbles (Markdown), system-call cards, notes.

:class:`ChatView` is a scroll area of widgets, one per message, so a streaming reply re-renders
only its own bubble (at most every ``FLUSH_MS``) and the rest of the conversation never moves.
Bubbles carry their message's index in the conversation (``Message`` list of the journal), which
is what Edit, Regenerate and the branch switcher ("‹ 2/3 ›") act on; the view only asks, through
its signals, and the window does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor, QGuiApplication, QPixmap, QTextBlockFormat, QTextCursor, QTextDocument, QTextFormat, QTextFrameFormat,
    QTextTable,
)
from PySide6.QtWidgets import (
    QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout, QWidget,
)

from llmos.app.answer_links import FoundLink, defang
from llmos.app.branches import Variant
from llmos.app.theme import BASE_POINT_SIZE, Theme, current_theme
from llmos.kernel import events
from llmos.kernel.devices import SAVED_FILE

FLUSH_MS = 40  # a streaming bubble re-renders at most this often
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: float) -> str:
    if seconds < 0.001:
        return "<1 ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render_markdown(text: str, theme: Theme) -> str:
    """Markdown (GitHub dialect) as the HTML a bubble shows: code blocks on a tinted background,
    tables with padded cells and theme-coloured borders."""
    doc = QTextDocument()
    font = QGuiApplication.font()
    font.setPointSize(BASE_POINT_SIZE + 1)
    doc.setDefaultFont(font)
    doc.setMarkdown(text, QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
    block = doc.begin()
    while block.isValid():
        fmt = block.blockFormat()
        if fmt.hasProperty(QTextFormat.Property.BlockCodeFence) or fmt.nonBreakableLines():
            code = QTextBlockFormat()
            code.setBackground(QColor(theme.code))
            code.setLeftMargin(6)
            code.setRightMargin(6)
            QTextCursor(block).mergeBlockFormat(code)
        block = block.next()
    for frame in doc.rootFrame().childFrames():
        if isinstance(frame, QTextTable):
            table = frame.format()
            table.setBorder(1)
            table.setBorderBrush(QColor(theme.card_border))
            table.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
            table.setBorderCollapse(True)
            table.setCellPadding(5)
            table.setCellSpacing(0)
            frame.setFormat(table)
    return doc.toHtml()


def settled_prefix(text: str) -> int:
    """Where a streaming Markdown text can be cut: after its last blank line outside a code
    fence. What comes before no longer changes as more tokens arrive."""
    cut = 0
    fenced = False
    position = 0
    for line in text.split("\n")[:-1]:  # the last line may still grow
        position += len(line) + 1
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and not line.strip():
            cut = position
    return cut


def _body_label() -> QLabel:
    label = QLabel()
    label.setObjectName("body")
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    label.setOpenExternalLinks(False)
    label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    return label


def _tool_button(text: str, tip: str) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.setAutoRaise(True)
    button.setCursor(Qt.CursorShape.PointingHandCursor)
    return button


class MessageBubble(QFrame):
    """One user message or model answer: a header (who, branch switcher, actions) and Markdown."""

    def __init__(self, role: str, text: str, index: int | None, view: "ChatView") -> None:
        super().__init__()
        self.role = role
        self.index = index
        self.text = text
        self._view = view
        self.setObjectName("bubble")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.who = QLabel("You" if role == "user" else "llmos")
        self.who.setObjectName("who")
        self.branch_prev = _tool_button("‹", "Previous version")
        self.branch_label = QLabel("")
        self.branch_label.setObjectName("dim")
        self.branch_next = _tool_button("›", "Next version")
        self.copy_button = _tool_button("Copy", "Copy this message")
        self.edit_button = _tool_button("Edit", "Edit and resend (makes a branch)")
        self.regen_button = _tool_button("Regenerate", "Answer again (makes a branch)")
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.setSpacing(4)
        head.addWidget(self.who)
        head.addStretch(1)
        for w in (self.branch_prev, self.branch_label, self.branch_next, self.copy_button,
                  self.edit_button, self.regen_button):
            head.addWidget(w)
        self.body = _body_label()
        self._settled: list[QLabel] = []  # while streaming: rendered parts that no longer change
        self._settled_chars = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 10)
        layout.setSpacing(4)
        layout.addLayout(head)
        layout.addWidget(self.body)
        self._layout = layout
        self.copy_button.clicked.connect(self.copy)
        self.edit_button.clicked.connect(lambda: view.edit_requested.emit(self.index, self.text))
        self.regen_button.clicked.connect(lambda: view.regenerate_requested.emit())
        self.branch_prev.clicked.connect(lambda: self._go(-1))
        self.branch_next.clicked.connect(lambda: self._go(+1))
        self.variant: Variant | None = None
        # an answer from a conversation that read untrusted content: links and images as text
        self.untrusted = role == "assistant" and view.tainted
        self.links: list[FoundLink] = []
        self.set_variant(None)
        self.edit_button.setVisible(role == "user")
        self.regen_button.setVisible(False)
        self.set_text(text)

    def set_text(self, text: str) -> None:
        """The whole message, rendered in one piece (a finished message)."""
        self.text = text
        for label in self._settled:
            self._layout.removeWidget(label)
            label.deleteLater()
        self._settled, self._settled_chars = [], 0
        self.body.setText(render_markdown(self._shown(text), current_theme()) if text else "…")

    def _shown(self, text: str) -> str:
        """The Markdown to render: an untrusted answer's links and images made inert text."""
        if not self.untrusted:
            return text
        shown, self.links = defang(text, self._view.user_texts())
        return shown

    def stream_text(self, text: str) -> None:
        """A message still being written: the settled paragraphs are rendered once, into labels
        of their own; each update renders only the paragraph that is still growing."""
        self.text = text
        theme = current_theme()
        cut = settled_prefix(text)
        if cut > self._settled_chars:
            part = text[self._settled_chars:cut].strip("\n")
            if part:
                label = _body_label()
                label.setText(render_markdown(self._shown(part), theme))
                self._layout.insertWidget(self._layout.indexOf(self.body), label)
                self._settled.append(label)
            self._settled_chars = cut
        tail = text[self._settled_chars:]
        self.body.setText(render_markdown(self._shown(tail), theme) if tail.strip() else "")

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text)

    def set_variant(self, variant: Variant | None) -> None:
        self.variant = variant
        for w in (self.branch_prev, self.branch_label, self.branch_next):
            w.setVisible(variant is not None)
        if variant is not None:
            self.branch_label.setText(f"{variant.position}/{variant.total}")
            self.branch_prev.setEnabled(variant.previous is not None)
            self.branch_next.setEnabled(variant.next is not None)

    def _go(self, step: int) -> None:
        if self.variant is None:
            return
        target = self.variant.previous if step < 0 else self.variant.next
        if target is not None:
            self._view.branch_selected.emit(target)


class SyscallCard(QFrame):
    """A system call: one compact line (device.call, arguments, result, time, trust), expandable
    to the full arguments and result; an image the call produced is shown inline."""

    def __init__(self, device: str, call: str, arguments: Any, view: "ChatView") -> None:
        super().__init__()
        self.setObjectName("card")
        self._view = view
        self.device, self.call, self.arguments = device, call, arguments
        self.result: Any = None
        self.ok: bool | None = None
        self.trusted = True
        self.seconds = 0.0
        self.error: str | None = None
        self.toggle = _tool_button("▸", "Show the details")
        self.toggle.setObjectName("toggle")
        self.line = QLabel()
        self.line.setObjectName("mono")
        self.line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.line.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.badge = QLabel()
        self.badge.setObjectName("badge")
        self.time_label = QLabel()
        self.time_label.setObjectName("dim")
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.setSpacing(6)
        head.addWidget(self.toggle)
        head.addWidget(self.line, 1)
        head.addWidget(self.badge)
        head.addWidget(self.time_label)
        self.details = QPlainTextEdit()
        self.details.setObjectName("details")
        self.details.setReadOnly(True)
        self.details.setVisible(False)
        self.details.setMaximumHeight(220)
        self.image = QLabel()
        self.image.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 10, 4)
        layout.setSpacing(4)
        layout.addLayout(head)
        layout.addWidget(self.details)
        layout.addWidget(self.image)
        self.toggle.clicked.connect(lambda: self.set_expanded(not self.expanded))
        self._render()

    @property
    def expanded(self) -> bool:
        return not self.details.isHidden()

    def set_expanded(self, on: bool) -> None:
        self.details.setVisible(on)
        self.toggle.setText("▾" if on else "▸")
        self.toggle.setToolTip("Hide the details" if on else "Show the details")

    def finish(self, result: Any, ok: bool, seconds: float, trusted: bool, error: str | None) -> None:
        self.result, self.ok, self.seconds, self.trusted, self.error = result, ok, seconds, trusted, error
        if not trusted:  # from here on, the conversation's answers may carry injected links
            self._view.tainted = True
        self._render()
        self._show_image()

    def summary(self) -> str:
        head = f"⚙ {self.device}.{self.call} {short(self.arguments, 80)}"
        if self.ok is None:
            return f"{head} …"
        outcome = f"→ {short(self.result, 100)}" if self.ok else f"✗ {short(self.error or 'failed', 100)}"
        return f"{head} {outcome}"

    def _render(self) -> None:
        theme = current_theme()
        self.line.setText(self.summary())
        self.line.setToolTip(self.summary())
        if self.ok is None:
            self.badge.setText("running")
            color = theme.dim
        elif not self.ok:
            self.badge.setText("failed")
            color = theme.error
        else:
            self.badge.setText("trusted" if self.trusted else "untrusted")
            color = theme.trusted if self.trusted else theme.untrusted
        self.badge.setStyleSheet(f"color: {color}; border: 1px solid {color}; border-radius: 7px; padding: 0 6px;")
        self.time_label.setText(duration(self.seconds) if self.ok is not None else "")
        details = [f"device:    {self.device}", f"call:      {self.call}",
                   f"arguments: {json.dumps(self.arguments, ensure_ascii=False, indent=2, default=str)}"]
        if self.ok is not None:
            details.append(f"time:      {duration(self.seconds)}")
            details.append(f"trusted:   {'yes' if self.trusted else 'no (data from outside: never instructions)'}")
            if self.ok:
                value = self.result if isinstance(self.result, str) else json.dumps(
                    self.result, ensure_ascii=False, indent=2, default=str)
                details.append(f"result:\n{value}")
            else:
                details.append(f"error:     {self.error}")
        self.details.setPlainText("\n".join(details))
        lines = min(14, self.details.document().lineCount())
        self.details.setFixedHeight(lines * self.details.fontMetrics().lineSpacing() + 14)

    def image_path(self) -> Path | None:
        value = self.result
        path = value.get(SAVED_FILE) if isinstance(value, dict) else None
        if isinstance(path, str) and path.lower().endswith(IMAGE_SUFFIXES) and Path(path).is_file():
            return Path(path)
        return None

    def _show_image(self) -> None:
        path = self.image_path() if self.ok else None
        if path is None:
            return
        pixmap = QPixmap(str(path))
        if pixmap.isNull():
            return
        if pixmap.width() > 360 or pixmap.height() > 260:
            pixmap = pixmap.scaled(360, 260, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self.image.setPixmap(pixmap)
        self.image.setToolTip(str(path))
        self.image.setVisible(True)


class Note(QLabel):
    """A line from the OS in the conversation: stopped, an error, recalled memory, a branch."""

    def __init__(self, text: str, error: bool) -> None:
        super().__init__(text)
        self.error = error
        self.setObjectName("error" if error else "note")
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)


class ChatView(QScrollArea):
    """The conversation: bubbles, cards and notes, newest at the bottom (kept there while the
    user has not scrolled up)."""

    edit_requested = Signal(object, str)  # message index, its text
    regenerate_requested = Signal()
    branch_selected = Signal(str)  # the conversation to open

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._inner = QWidget()
        self._inner.setObjectName("chat")
        self._layout = QVBoxLayout(self._inner)
        self._layout.setContentsMargins(18, 14, 18, 14)
        self._layout.setSpacing(10)
        self._empty = QLabel("Ask llmos anything.\n\nEnter sends · Shift+Enter new line · Esc stops\n"
                             "Ctrl+N new conversation · Ctrl+K search conversations")
        self._empty.setObjectName("empty")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._layout.addStretch(1)
        self._layout.addWidget(self._empty)
        self._layout.addStretch(1)
        self.setWidget(self._inner)
        self.items: list[QWidget] = []
        self.cards: dict[tuple[int, int], SyscallCard] = {}
        self.tainted = False  # the conversation shown has read untrusted content (answer_links)
        self._live: MessageBubble | None = None  # the reply streaming in
        self._live_text = ""
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(FLUSH_MS)
        self._flush.timeout.connect(self._flush_live)
        self._stick = True
        self.verticalScrollBar().rangeChanged.connect(self._follow)
        self.verticalScrollBar().valueChanged.connect(self._scrolled)
        self._restyle()

    # --- building ----------------------------------------------------------------------------

    def clear(self) -> None:
        self._flush.stop()
        for item in self.items:
            self._layout.removeWidget(item)
            item.deleteLater()
        self.items, self.cards, self._live, self._live_text = [], {}, None, ""
        self.tainted = False
        self._empty.setVisible(True)
        self._layout.setStretch(0, 1)
        self._stick = True

    def _add(self, widget: QWidget) -> QWidget:
        self._empty.setVisible(False)
        self._layout.setStretch(0, 0)  # messages start at the top; the placeholder was centred
        self._layout.insertWidget(self._layout.count() - 2, widget)
        self.items.append(widget)
        self._stick = self._stick or self._at_bottom()
        return widget

    def add_message(self, role: str, text: str, index: int | None = None) -> MessageBubble:
        bubble = MessageBubble(role, text, index, self)
        self._style_bubble(bubble)
        self._add(bubble)
        return bubble

    def add_note(self, text: str, *, error: bool = False) -> Note:
        note = Note(text, error)
        self._add(note)
        return note

    def add_card(self, key: tuple[int, int], device: str, call: str, arguments: Any) -> SyscallCard:
        card = SyscallCard(device, call, arguments, self)
        self.cards[key] = card
        self._add(card)
        return card

    def finish_card(self, event: events.SyscallFinished) -> SyscallCard:
        key = (event.pid, event.call_id)
        card = self.cards.get(key) or self.add_card(key, event.device, event.call, event.arguments)
        card.finish(event.result, event.ok, event.seconds, event.trusted, event.error)
        return card

    # --- the streaming reply -----------------------------------------------------------------

    def append_reply(self, text: str) -> None:
        if self._live is None:
            text = text.lstrip()
            if not text:
                return
            self._live = self.add_message("assistant", "")
            self._live_text = ""
        self._live_text += text
        if not self._flush.isActive():
            self._flush.start()

    def _flush_live(self) -> None:
        if self._live is not None:
            self._live.stream_text(self._live_text)

    def end_reply(self, text: str | None = None, index: int | None = None) -> MessageBubble | None:
        """The answer is complete (``text`` is the journaled one, when known)."""
        self._flush.stop()
        bubble, self._live = self._live, None
        if bubble is None and text:
            bubble = self.add_message("assistant", text, index)
        elif bubble is not None:
            bubble.set_text(text if text is not None else self._live_text)
            if index is not None:
                bubble.index = index
        self._live_text = ""
        return bubble

    def user_texts(self) -> list[str]:
        """What the user wrote in the conversation shown (a URL carrying it is flagged)."""
        return [item.text for item in self.items if isinstance(item, MessageBubble) and item.role == "user"]

    @property
    def streaming(self) -> bool:
        return self._live is not None

    # --- reading it back ---------------------------------------------------------------------

    def bubbles(self) -> list[MessageBubble]:
        return [w for w in self.items if isinstance(w, MessageBubble)]

    def plain_text(self) -> str:
        """What a person reads, top to bottom (the tests read this)."""
        lines: list[str] = []
        for item in self.items:
            if isinstance(item, MessageBubble):
                head = "You" if item.role == "user" else "llmos"
                text = self._live_text if item is self._live else item.text
                lines += [head, text]
            elif isinstance(item, SyscallCard):
                tail = f" · {duration(item.seconds)}" if item.ok is not None else ""
                trust = " (untrusted)" if item.ok and not item.trusted else ""
                lines.append(f"{item.summary()}{trust}{tail}")
            elif isinstance(item, Note):
                lines.append(item.text())
        return "\n".join(lines)

    def set_variants(self, found: dict[int, Variant]) -> None:
        """Show the branch switchers: each fork on the first bubble at or after its message."""
        bubbles = [b for b in self.bubbles() if b.index is not None]
        for bubble in bubbles:
            bubble.set_variant(None)
        for index in sorted(found):
            bubble = next((b for b in bubbles if b.index is not None and b.index >= index), None)
            if bubble is not None and bubble.variant is None:
                bubble.set_variant(found[index])

    def set_regenerate_on_last_answer(self, enabled: bool) -> None:
        answers = [b for b in self.bubbles() if b.role == "assistant"]
        for bubble in answers:
            bubble.regen_button.setVisible(False)
        if answers and enabled:
            answers[-1].regen_button.setVisible(True)

    def set_editing_enabled(self, enabled: bool) -> None:
        for bubble in self.bubbles():
            bubble.edit_button.setEnabled(enabled and bubble.index is not None)
            bubble.regen_button.setEnabled(enabled)

    # --- scrolling and style -----------------------------------------------------------------

    def _at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 8

    def _scrolled(self, _value: int) -> None:
        self._stick = self._at_bottom()

    def _follow(self, _low: int, high: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(high)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._restyle()
        super().changeEvent(event)

    def _restyle(self) -> None:
        theme = current_theme()
        size = BASE_POINT_SIZE + 1
        self._inner.setStyleSheet(f"""
            QWidget#chat {{ background: {theme.window}; }}
            QLabel#empty {{ color: {theme.dim}; font-size: {size}pt; }}
            QLabel#note {{ color: {theme.dim}; font-style: italic; padding-left: 14px; }}
            QLabel#error {{ color: {theme.error}; padding-left: 14px; }}
            QLabel#dim {{ color: {theme.dim}; }}
            QFrame#card {{ background: {theme.card}; border: 1px solid {theme.card_border};
                          border-radius: 8px; margin-left: 14px; margin-right: 40px; }}
            QFrame#card QLabel {{ border: none; background: transparent; }}
            QLabel#mono {{ font-family: monospace; color: {theme.text}; }}
            QPlainTextEdit#details {{ font-family: monospace; background: {theme.code};
                                     border: 1px solid {theme.card_border}; border-radius: 4px; }}
            QToolButton {{ color: {theme.dim}; border: none; padding: 1px 5px; }}
            QToolButton:hover {{ color: {theme.accent}; }}
            QToolButton:disabled {{ color: {theme.card_border}; }}
        """)
        for bubble in self.bubbles():
            self._style_bubble(bubble, theme)
            if bubble is not self._live:
                bubble.set_text(bubble.text)
        for card in self.cards.values():
            card._render()

    @staticmethod
    def _style_bubble(bubble: MessageBubble, theme: Theme | None = None) -> None:
        theme = theme or current_theme()
        user = bubble.role == "user"
        background = theme.user_bubble if user else theme.model_bubble
        margins = "margin-left: 60px;" if user else "margin-right: 40px;"
        bubble.setStyleSheet(f"""
            QFrame#bubble {{ background: {background}; border: 1px solid {theme.card_border};
                            border-radius: 10px; {margins} }}
            QLabel#who {{ color: {theme.user_name if user else theme.model_name}; font-weight: bold;
                         font-size: {BASE_POINT_SIZE}pt; }}
            QLabel#body {{ color: {theme.text}; font-size: {BASE_POINT_SIZE + 1}pt; }}
        """)
