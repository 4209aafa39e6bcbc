"""Long conversations: the decision reads the turn, not the whole history; answers that present a
device result the turn did not produce are caught (kernel/syscalls/claims.py, kernel/turn.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.kernel import events
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.devices import Device, Example
from llmos.kernel.loop import Kernel
from llmos.kernel.process import Message
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.claims import ClaimCheck, Gate, Produced, find_claim, result_prefix, results_of
from llmos.kernel.turn import TurnOptions
from tests.benches import bench_module

CALLS = {"memory.remember": "Store a fact in long-term memory so it can be recalled later.",
         "calculator.evaluate": "Evaluate an arithmetic expression exactly and return the number."}
FIRST = Produced("memory.remember", "Remembered (id aaaa00000001): item 5 is in box 105")


def test_a_copied_result_of_an_earlier_call_is_a_claim_of_that_call():
    claim = find_claim("Remembered (id aaaa00000001): item 6 is in box 106", "Remember item 6 is in box 106.",
                       [], [FIRST], CALLS)
    assert claim is not None and claim.call == "memory.remember" and claim.start == 0
    assert result_prefix(FIRST.text) == "Remembered (id"


def test_the_same_words_are_no_claim_when_the_call_ran_in_this_turn():
    now = [Produced("memory.remember", "Remembered (id bbbb00000002): item 6 is in box 106")]
    assert find_claim("Remembered (id bbbb00000002): item 6 is in box 106", "Remember item 6.", now, [FIRST],
                      CALLS) is None
    # the old id is still a copy, though the call ran
    stale = find_claim("Remembered (id aaaa00000001): item 6", "Remember item 6.", now, [FIRST], CALLS)
    assert stale is not None and stale.evidence.lower() == "aaaa00000001"


def test_saying_the_action_was_done_is_a_claim_and_denying_it_or_chatting_is_not():
    for said in ("I've remembered that your keys are in the drawer.", "Got it, I'll remember that.",
                 "Your fact has been stored.", "Sure. Remembered: item 7 is in box 107."):
        claim = find_claim(said, "keys are in the drawer", [], [], CALLS)
        assert claim is not None and claim.call == "memory.remember", said
    written = find_claim('CALL memory.remember {"text": "x"}', "note x", [], [], CALLS)
    assert written is not None and written.call == "memory.remember" and written.start == 0
    for chat in ("The number 7 is remembered as lucky in many cultures.", "I have not stored anything.",
                 "What should I remember about Lisbon? Its trams.", "The product is 5612."):
        assert find_claim(chat, "Tell me about 7.", [], [], CALLS) is None, chat


def test_an_id_no_device_made_is_a_claim_of_no_call():
    claim = find_claim("Saved under id 9f3c2a1b7d4e.", "hello", [], [], CALLS)
    assert claim is not None and claim.call is None
    assert find_claim("Your order 9f3c2a1b7d4e is fine.", "is order 9f3c2a1b7d4e fine?", [], [], CALLS) is None


def test_results_are_the_tool_messages_that_answer_a_call():
    messages = [Message("user", "remember x"), Message("assistant", '{"text": "x"}', call="memory.remember"),
                Message("tool", "Remembered (id aaaa00000001): x", call="memory.remember"),
                Message("tool", "From the file a.md: ...", call="memory.recall", trusted=False)]  # paged in
    assert results_of(messages) == [Produced("memory.remember", "Remembered (id aaaa00000001): x")]


def test_the_gate_never_shows_the_start_of_a_claim():
    check = ClaimCheck("remember item 6", [], [FIRST], CALLS)
    gate = Gate(check, hold=24)
    shown = ""
    for piece in ["Sure", "! ", "Remem", "bered (id ", "aaaa00000001", "): item 6"]:
        out = gate.feed(piece)
        if out is None:
            break
        shown += "".join(out)
    assert gate.claim is not None and "Remem" not in shown and gate.safe == "Sure! "
    plain = Gate(lambda text, since, complete: None, hold=4)
    assert plain.feed("Hello") == [] and plain.feed(" there, ") == ["Hello"] and plain.feed("friend") == [" there, "]
    assert plain.flush() == ["friend"]


def remembering_device(stored: list[str]) -> Device:
    device = Device("memory", description="Long-term memory.")

    @device.call(examples=[Example("Remember that my bike lock code is 4821.", {"text": "my bike lock code is 4821"})])
    def remember(text: str) -> str:
        """Store a fact in long-term memory so it can be recalled later.

        Args:
            text: The fact.
        """
        stored.append(text)
        return f"Remembered (id aaaa{len(stored):08d}): {text}"

    return device


def kernel_with(backend: ScriptedBackend, stored: list[str], **opts) -> Kernel:
    registry = DeviceRegistry()
    registry.register(remembering_device(stored))
    kernel = Kernel(backend, registry, TurnOptions(**opts)).start()
    kernel.wait_ready(5)
    return kernel


def test_a_copied_remember_result_makes_the_kernel_call_the_device_and_is_never_shown():
    stored: list[str] = []
    backend = ScriptedBackend([
        'CALL memory.remember {"text": "item 5 is in box 105"}', "ANSWER: Remembered (id aaaa00000001): item 5 is in box 105",
        # turn 2: the model copies turn 1's result instead of calling
        "ANSWER: Remembered (id aaaa00000001): item 6 is in box 106",
        'CALL memory.remember {"text": "item 6 is in box 106"}',  # the call the kernel makes for it
        "ANSWER: Remembered (id aaaa00000002): item 6 is in box 106",
    ])
    kernel = kernel_with(backend, stored)
    pid = kernel.spawn()
    kernel.submit(pid, "Remember that item 5 is in box 105.").result(5)
    seen: list[str] = []
    kernel.bus.subscribe(lambda e: seen.append(e.text) if isinstance(e, events.Token) else None)
    second = kernel.submit(pid, "Remember that item 6 is in box 106.").result(5)
    kernel.shutdown()
    assert stored == ["item 5 is in box 105", "item 6 is in box 106"]  # the fact was stored
    assert [s["call"] for s in second.syscalls] == ["remember"]
    assert "aaaa00000001" not in "".join(seen)  # the copied id was never shown
    assert second.answer == "Remembered (id aaaa00000002): item 6 is in box 106"


def test_a_claim_with_nothing_to_back_it_is_replaced_by_a_line_saying_so():
    stored: list[str] = []
    backend = ScriptedBackend(["ANSWER: Done, saved under id 9f3c2a1b7d4e for you."])
    kernel = kernel_with(backend, stored)
    seen: list[str] = []
    kernel.bus.subscribe(lambda e: seen.append(e.text) if isinstance(e, events.Token) else None)
    result = kernel.ask("Thanks!").result(5)
    kernel.shutdown()
    assert "9f3c2a1b7d4e" not in "".join(seen) and "9f3c2a1b7d4e" not in result.answer
    assert result.answer.startswith("Done, saved under") and "Not done" in result.answer
    assert "".join(seen).strip() == result.answer
    assert stored == [] and result.syscalls == []


def test_without_the_check_the_copy_is_shown_as_it_was_before():
    backend = ScriptedBackend(["ANSWER: Remembered (id aaaa00000001): item 6 is in box 106"])
    kernel = kernel_with(backend, [], check_claims=False)
    result = kernel.ask("Remember that item 6 is in box 106.").result(5)
    kernel.shutdown()
    assert result.answer.startswith("Remembered (id aaaa00000001)") and result.syscalls == []


def test_the_decision_reads_the_turn_and_the_answer_the_conversation():
    backend = ScriptedBackend(["ANSWER: Hello!", "ANSWER: Fine, thanks."])
    kernel = kernel_with(backend, [])
    pid = kernel.spawn()
    kernel.submit(pid, "Hi there, I am Ada.").result(5)
    kernel.submit(pid, "How are you?").result(5)
    kernel.shutdown()
    decision_prompt, answer_prompt = backend.history[-2], backend.history[-1]
    assert "How are you?" in decision_prompt and "I am Ada" not in decision_prompt
    assert "I am Ada" in answer_prompt and answer_prompt.endswith("ANSWER:")
    before = ScriptedBackend(["ANSWER: Hello!", "ANSWER: Fine, thanks."])
    kernel = kernel_with(before, [], decision_context="conversation")
    pid = kernel.spawn()
    kernel.submit(pid, "Hi there, I am Ada.").result(5)
    kernel.submit(pid, "How are you?").result(5)
    kernel.shutdown()
    assert "I am Ada" in before.history[-2]


def _bench():
    return bench_module("conversations")


def test_the_bench_judge_counts_claims_and_head_arithmetic():
    bench = _bench()
    t = bench.TurnOutcome(3, "Remember item 6 is in box 106.", "memory.remember", [],
                          "Remembered (id 648800002c42): item 6 is in box 106", [], 0.1)
    assert t.false_claim and not t.right
    ok = bench.TurnOutcome(3, "Remember item 6.", "memory.remember", ["memory.remember"],
                           "Remembered (id 648800002c99): item 6", [], 0.1, results=["Remembered (id 648800002c99): item 6"])
    assert ok.right and not ok.false_claim
    head = bench.TurnOutcome(1, "What is 122 x 46?", "calculator.evaluate", [], "It is 5912.", [], 0.1, value="5612")
    assert head.head_arithmetic and not head.value_right
    data = json.loads((Path(bench.__file__).parent / "data" / "conversations_measure.json").read_text())
    assert len(data["conversations"]) >= 5 and all(len(c["turns"]) >= 30 for c in data["conversations"])


@pytest.mark.model
@pytest.mark.timeout(3600)  # 30 turns: about 2 minutes alone, 10-40 on a busy shared machine
def test_thirty_turns_on_the_real_model_every_call_made_and_every_fact_stored(real_backend):
    """The conversation of issue 13 (a product, a chat about a number, "remember where item k is",
    ten times), as one process: floors a little under what bench/bench_conversations.py measured."""
    bench = _bench()
    conversation = next(c for c in bench.load(bench.SETS["tuning"]) if c["id"] == "issue-pattern")
    outcome = bench.run_conversation(real_backend, conversation, TurnOptions(max_answer_tokens=bench.MAX_ANSWER_TOKENS))
    summary = bench.summarise([outcome])
    wrong = [bench.describe(t) for t in outcome.turns if t.expect and not t.right]
    assert summary.right >= 19 and summary.needing == 20, wrong
    assert summary.facts_stored >= 9, summary.line()
    assert summary.false_claims == 0, [bench.describe(t) for t in outcome.turns if t.false_claim]
    late = [t for t in outcome.turns if t.expect and t.position > 20]
    assert sum(t.right for t in late) >= len(late) - 1, wrong
