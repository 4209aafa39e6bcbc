"""The decision step: calibrated margins, and the calibration kept on disk."""

from __future__ import annotations

from pathlib import Path

from llmos.kernel.syscalls.decide import Calibration, decide


class CountingBackend:
    """Scores from a table: {continuation: score} for real prompts, another for null prompts."""

    name, model, supports_scoring = "counting", "counting-model", True

    def __init__(self, real: dict[str, float], null: dict[str, float]) -> None:
        self.real, self.null, self.calls = real, null, 0

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        self.calls += 1
        table = self.null if prompt.startswith("NULL") else self.real
        return [table[c] for c in continuations]

    def release(self, pid: int) -> None:
        pass


def test_habit_is_calibrated_away_and_the_models_own_choice_is_kept(tmp_path: Path):
    null = {"ANSWER:": -3.0, "CALL calc.eval": -1.0, "CALL web.open": -4.0}
    # the model "likes" the calculator whatever is asked: raw margin 1.5, calibrated -0.5
    backend = CountingBackend({"ANSWER:": -2.0, "CALL calc.eval": -0.5, "CALL web.open": -5.0}, null)
    calibration = Calibration(lambda: ["NULL a", "NULL b"])
    chat = decide(backend, 1, "Hi", ["calc.eval", "web.open"], 1.0, calibration)
    assert chat.call is None and chat.best == "calc.eval" and abs(chat.margin - (-0.5)) < 1e-9
    backend.real = {"ANSWER:": -6.0, "CALL calc.eval": -0.2, "CALL web.open": -4.0}
    sums = decide(backend, 1, "12*7?", ["calc.eval", "web.open"], 1.0, calibration)
    assert sums.call == "calc.eval" and sums.margin > 1.0


def test_calibration_is_kept_on_disk_and_a_damaged_file_is_only_a_cache(tmp_path: Path):
    null = {"ANSWER:": -3.0, "CALL calc.eval": -1.0}
    store = tmp_path / "calibration.json"
    first = CountingBackend({"ANSWER:": 0.0, "CALL calc.eval": 0.0}, null)
    Calibration(lambda: ["NULL"], store).baseline(first, ["calc.eval"])
    assert first.calls == 1 and store.is_file()
    second = CountingBackend({}, null)
    assert Calibration(lambda: ["NULL"], store).baseline(second, ["calc.eval"]) == [-3.0, -1.0]
    assert second.calls == 0
    other_prompt = CountingBackend({}, null)
    Calibration(lambda: ["NULL changed"], store).baseline(other_prompt, ["calc.eval"])
    assert other_prompt.calls == 1  # another boot prompt: scored again
    store.write_text("{not json")
    damaged = CountingBackend({}, null)
    assert Calibration(lambda: ["NULL"], store).baseline(damaged, ["calc.eval"]) == [-3.0, -1.0]
    assert damaged.calls == 1
