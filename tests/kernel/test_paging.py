"""The context window as RAM: budget, pinned pages, whole-turn eviction, page-in."""

from __future__ import annotations

import pytest

from llmos.kernel import events
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.loop import Kernel
from llmos.kernel.paging import RECALL_HEADER, fit, turns_of
from llmos.kernel.process import Message
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import TurnOptions


def words(messages: list[Message]) -> int:
    return sum(len(m.content.split()) + 1 for m in messages)


def test_fit_keeps_pinned_pages_and_evicts_whole_turns_oldest_first():
    pinned = [Message("system", "boot prompt " * 5)]
    turn1 = [Message("user", "what is 2+2"), Message("assistant", '{"expression": "2+2"}', call="calculator.evaluate"),
             Message("tool", "4", call="calculator.evaluate"), Message("assistant", "It is 4.")]
    turn2 = [Message("user", "and 3+3"), Message("assistant", "6")]
    turn3 = [Message("user", "thanks")]
    messages = [*pinned, *turn1, *turn2, *turn3]
    assert turns_of(messages[1:]) == [turn1, turn2, turn3]
    kept, eviction = fit(messages, 1, budget=words([*pinned, *turn2, *turn3]), count=words)
    assert kept == [*pinned, *turn2, *turn3]
    assert eviction is not None and eviction.turns == [turn1]  # the call and its result left together
    kept, eviction = fit(messages, 1, budget=1, count=words)
    assert kept == [*pinned, *turn3]  # the current turn always stays
    assert fit(messages, 1, budget=10_000, count=words) == (messages, None)


class RecordingPager:
    def __init__(self, recall: list[str] | None = None) -> None:
        self.out: list[list[list[Message]]] = []
        self.queries: list[str] = []
        self.recall = recall or []

    def page_out(self, conversation, turns):
        self.out.append(turns)
        return [t[0].content for t in turns]

    def page_in(self, conversation, query, budget_chars):
        self.queries.append(query)
        return list(self.recall)


def test_a_long_conversation_pages_out_to_the_pager_and_says_so():
    backend = ScriptedBackend(responder=lambda prompt: "ANSWER: " + "fine " * 20)
    pager = RecordingPager()
    seen: list[events.Event] = []
    kernel = Kernel(backend, DeviceRegistry(), TurnOptions(ram_tokens=400), pager=pager).start()
    kernel.bus.subscribe(seen.append)
    pid = kernel.spawn()
    for n in range(12):
        kernel.submit(pid, f"message number {n} " + "blah " * 20).result(5)
    kernel.shutdown()
    paged = [e for e in seen if isinstance(e, events.Paged) and e.direction == "out"]
    assert paged and all(e.tokens_after <= 400 < e.tokens_before for e in paged)
    evicted_users = [t[0].content for batch in pager.out for t in batch]
    assert evicted_users[0].startswith("message number 0")
    last_prompt = backend.history[-1]
    assert "message number 0 " not in last_prompt and "message number 11" in last_prompt
    assert last_prompt.startswith("<|im_start|>system\nYou are llmos")  # the pinned boot prompt stayed


def test_relevant_pages_come_back_marked_before_the_turn():
    backend = ScriptedBackend(["ANSWER: On Friday at 3pm."])
    pager = RecordingPager(recall=["On 2026-11-20 the user said: my dentist appointment is on Friday at 3pm"])
    kernel = Kernel(backend, DeviceRegistry(), pager=pager).start()
    result = kernel.ask("When is my dentist appointment?").result(5)
    kernel.shutdown()
    assert pager.queries == ["When is my dentist appointment?"]
    prompt = backend.history[-1]
    assert RECALL_HEADER in prompt and "dentist appointment is on Friday at 3pm" in prompt
    assert prompt.index(RECALL_HEADER) < prompt.index("When is my dentist appointment?")
    assert result.answer == "On Friday at 3pm."



def test_the_ram_report_lists_resident_pages_and_what_was_paged():
    backend = ScriptedBackend(responder=lambda prompt: "ANSWER: " + "fine " * 20)
    pager = RecordingPager(recall=["an old fact"])
    from llmos.kernel.prompt import render
    from llmos.kernel.turn import boot_messages

    registry = DeviceRegistry()
    budget = len(backend.tokenize(render(boot_messages(registry)))) + 150  # the boot pages and about two turns
    kernel = Kernel(backend, registry, TurnOptions(ram_tokens=budget), pager=pager).start()
    pid = kernel.spawn()
    for n in range(8):
        kernel.submit(pid, f"message number {n} " + "blah " * 20).result(5)
    report = kernel.ram(pid)
    with pytest.raises(LookupError):
        kernel.ram(999)
    kernel.shutdown()
    kinds = [page.kind for page in report.pages]
    assert kinds[0] == "boot" and report.pages[0].pinned
    assert not any(page.pinned for page in report.pages[1:] if page.kind != "example")
    assert {"user", "answer", "recalled"} <= set(kinds)
    assert report.tokens <= report.budget == budget
    assert sum(page.tokens for page in report.pages) >= report.tokens - 5  # each page counted alone
    directions = {record.direction for record in report.paging}
    assert directions == {"in", "out"}
    out = [r for r in report.paging if r.direction == "out"]
    assert out[0].reason == "over the context budget" and out[0].tokens_before > budget >= out[0].tokens_after
    assert report.as_dict()["pages"][0]["kind"] == "boot"


@pytest.mark.model
def test_dentist_across_two_conversations_with_eviction_on_the_real_model(real_backend, tmp_path):
    from llmos.kernel.prompt import render, render_message
    from llmos.kernel.turn import boot_messages
    from llmos.memory.pager import DiskPager

    registry = DeviceRegistry.from_entry_points()
    registry.start(tmp_path)
    boot_tokens = len(real_backend.tokenize(render(boot_messages(registry))))
    fact = "My dentist appointment is on Friday at 3pm."
    fact_tokens = len(real_backend.tokenize(render_message(Message("user", fact))))
    pager = DiskPager(tmp_path / "devices" / "memory" / "chroma")
    seen: list[events.Event] = []
    # Room for the first message and a few tokens of answer, not for a second turn: the eviction is
    # forced by measured token counts, whatever length the model's answers have on this CPU.
    opts = TurnOptions(ram_tokens=boot_tokens + fact_tokens + 8, max_answer_tokens=40)
    kernel = Kernel(real_backend, registry, opts, pager=pager).start()
    kernel.bus.subscribe(seen.append)
    kernel.wait_ready(300)
    try:
        first = kernel.spawn("chat")
        kernel.submit(first, fact).result(300)
        for filler in ("Tell me a fun fact about owls.", "Name three rivers in Europe.", "Say hello in Spanish."):
            kernel.submit(first, filler).result(300)
        assert any(isinstance(e, events.Paged) and e.direction == "out" for e in seen), "nothing was evicted"
        second = kernel.spawn("chat")  # a new conversation: nothing of the first is in its context
        answer = kernel.submit(second, "When is my dentist appointment?").result(300).answer
    finally:
        kernel.shutdown(close_backend=False)
    assert any(isinstance(e, events.Paged) and e.direction == "in" and e.pid == second for e in seen)
    assert "friday" in answer.lower() and "3" in answer, answer


def test_pages_brought_in_for_a_turn_stay_and_leave_with_it():
    from llmos.kernel.paging import RECALL_CALL, recall_message

    recalled = recall_message(["the user's sister lives in Bergen"])
    passage = Message("tool", "From the file trip.md: ...", call=RECALL_CALL, trusted=False)
    turn1 = [Message("user", "hello"), Message("assistant", "hi")]
    turn2 = [recalled, passage, Message("user", "where does my sister live"),
             Message("assistant", '{"query": "sister"}', call=RECALL_CALL),
             Message("tool", "sister: Bergen", call=RECALL_CALL, trusted=False), Message("assistant", "Bergen")]
    assert turns_of([*turn1, *turn2]) == [turn1, turn2]  # a called recall's result stays in its turn
    kept, eviction = fit([Message("system", "boot"), *turn1, *turn2], 1, budget=1, count=words)
    assert kept[1:] == turn2 and eviction is not None and eviction.turns == [turn1]
