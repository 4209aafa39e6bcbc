"""Recovery after a failed call, with the scripted backend: the model sees the error page and
its hint, may call again with corrected arguments before it answers, and an answer never
presents a failed call's result as fact (issue 13, item 2)."""

from __future__ import annotations

import json

from llmos.kernel import events
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.devices import Device
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.claims import ClaimCheck, Produced, find_claim, not_done
from llmos.kernel.syscalls.decide import RETRY_MARGIN
from llmos.kernel.turn import TurnOptions
from llmos.plugins.calculator.words import HINT

CALC = "calculator.evaluate"
CALLS = {CALC: "Evaluate an arithmetic expression exactly and return the number.",
         "memory.remember": "Store a fact in long-term memory so it can be recalled later."}


def calc(expression: str) -> str:
    return f"CALL {CALC} " + json.dumps({"expression": expression})


def ask(backend: ScriptedBackend, text: str, registry: DeviceRegistry | None = None, **opts):
    seen: list[events.Event] = []
    kernel = Kernel(backend, registry or DeviceRegistry.from_entry_points(), TurnOptions(**opts)).start()
    kernel.bus.subscribe(seen.append)
    try:
        kernel.wait_ready(5)
        return kernel.ask(text).result(5), seen
    finally:
        kernel.shutdown()


class AnswersAfterAnError(ScriptedBackend):
    """A model whose round decision answers once it has seen an error page (the shy 0.5B's
    calibrated margin), though it finds calling the failed call again more likely than answering."""

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        scores = super().score(pid, prompt, continuations)
        if "Error: " in prompt and len(continuations) > 2:  # the round's decision, not the retry's
            return [0.0] + [-20.0] * (len(continuations) - 1)
        return scores


def streamed(seen: list[events.Event]) -> str:
    return "".join(e.text for e in seen if isinstance(e, events.Token))


def test_a_failed_call_is_corrected_and_the_answer_uses_the_corrected_result():
    backend = ScriptedBackend([calc("twelve squared"), calc("12**2"), "ANSWER: 12 squared is 144."])
    result, _ = ask(backend, "What is 12 squared?")
    assert [s["ok"] for s in result.syscalls] == [False, True]
    assert result.syscalls[0]["error"].endswith(HINT)
    assert result.syscalls[1]["result"] == "144"
    # the corrected arguments were written with the error page and its hint in view
    corrected = next(p for p in backend.history if p.rstrip().endswith(f"CALL {CALC}") and "Error: " in p)
    assert "Error: cannot read 'twelve squared'" in corrected and HINT in corrected
    assert result.answer == "12 squared is 144."


def test_the_model_may_try_again_when_the_round_decision_would_answer():
    backend = AnswersAfterAnError([calc("minutes in 5 weeks"), calc("5*7*24*60"), "ANSWER: 50400 minutes."])
    result, seen = ask(backend, "How many minutes are in 5 weeks?")
    assert [s["ok"] for s in result.syscalls] == [False, True]
    assert result.answer == "50400 minutes."
    retried = [e for e in seen if isinstance(e, events.SyscallDecided)][1]
    assert retried.call == CALC and retried.threshold == RETRY_MARGIN and retried.margin > RETRY_MARGIN


def test_without_the_retry_the_same_model_answers_after_the_error():
    backend = AnswersAfterAnError([calc("minutes in 5 weeks"), "ANSWER: I could not work out 5 weeks."])
    result, _ = ask(backend, "How many minutes are in 5 weeks?", retry_failed_calls=False)
    assert [s["ok"] for s in result.syscalls] == [False]
    assert result.answer == "I could not work out 5 weeks."


def test_the_model_may_decline_the_retry_and_say_what_failed():
    backend = ScriptedBackend([calc("twelve squared"), "ANSWER: The calculator could not read 12 apples."])
    result, _ = ask(backend, "What are 12 apples?")
    assert len(result.syscalls) == 1
    assert result.answer == "The calculator could not read 12 apples."  # the request's own number


def test_a_failure_that_arguments_cannot_fix_gets_no_retry():
    flaky = Device("flaky", description="misbehaves")

    @flaky.call
    def boom(n: int) -> str:
        """Raise."""
        raise RuntimeError("kaput")

    registry = DeviceRegistry.from_entry_points()
    registry.register(flaky)
    backend = AnswersAfterAnError(['CALL flaky.boom {"n": 1}', "ANSWER: It broke."])
    result, seen = ask(backend, "break it", registry)
    assert len(result.syscalls) == 1 and "RuntimeError: kaput" in result.syscalls[0]["error"]
    decided = [e for e in seen if isinstance(e, events.SyscallDecided)]
    assert len(decided) == 2 and all(e.threshold != RETRY_MARGIN for e in decided)  # no retry asked
    assert result.answer == "It broke."


def test_an_answer_never_presents_a_failed_call_s_result_as_fact():
    # The model repeats its refused arguments (nothing to correct) and then guesses a number.
    guess = "ANSWER: 12 apples weigh 150 grams."
    backend = ScriptedBackend([calc("twelve squared"), calc("twelve squared"), guess, calc("twelve squared"), guess])
    result, seen = ask(backend, "How much do 12 apples weigh?")
    assert len(result.syscalls) == 1 and not result.syscalls[0]["ok"]
    assert "150" not in result.answer and "150" not in streamed(seen)
    assert "(Not done: calculator.evaluate failed (cannot read 'twelve squared'" in result.answer
    assert result.answer.startswith("12 apples weigh")


def test_after_a_failure_numbers_the_turn_holds_may_be_repeated():
    # python.run failed and the calculator then succeeded: the answer is about that result.
    failed = [Produced("python.run", "Error: SyntaxError"), Produced(CALC, "50400")]
    assert find_claim("That is 50,400 minutes, 5 weeks of 7 days.", "minutes in 5 weeks?", failed, [],
                      CALLS) is None
    only_failed = [Produced(CALC, "Error: cannot read 'minutes in 5 weeks'")]
    claim = find_claim("That is 50400 minutes.", "minutes in 5 weeks?", only_failed, [], CALLS)
    assert claim is not None and claim.call == CALC and claim.evidence == "50400"
    assert "failed (cannot read 'minutes in 5 weeks')" in not_done(claim)


def test_a_call_that_failed_did_not_run_for_the_claim_check():
    failed = [Produced("memory.remember", "Error: the store is full")]
    claim = find_claim("I've remembered that.", "remember that my keys are in the drawer", failed, [], CALLS)
    assert claim is not None and claim.call == "memory.remember"
    assert find_claim("I could not store it: the store is full.", "remember it", failed, [], CALLS) is None


def test_a_streaming_number_is_judged_once_it_is_complete():
    check = ClaimCheck("what is 12 squared?", [Produced("python.run", "144"), Produced(CALC, "Error: cannot read")],
                       [], CALLS)
    assert check("It is 14", 0, False) is None and check("It is 3.", 0, False) is None  # may go on
    assert check("It is 144.", 0, True) is None
    claim = check("It is 14.", 0, True)  # the calculator failed, and no page holds 14
    assert claim is not None and claim.evidence == "14"
