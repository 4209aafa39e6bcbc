"""How answers are sampled (kernel/prose.py): answers get the anti-loop sampling, calls stay
greedy, and llama.cpp's sampler chain does what the settings say on the real model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llmos.app.boot import turn_options
from llmos.kernel.backends.base import SamplingParams
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.config import ConfigError, load_config
from llmos.kernel.loop import Kernel
from llmos.kernel.prose import Prose
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.turn import TurnOptions


class Recording(ScriptedBackend):
    """The scripted backend, keeping the SamplingParams of every stream it opens."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(replies)
        self.opened: list[SamplingParams] = []

    def open(self, pid, prompt, params, json_schema=None):
        self.opened.append(params)
        return super().open(pid, prompt, params, json_schema)


def test_answers_are_sampled_as_the_options_say_and_arguments_stay_greedy():
    prose = Prose(temperature=0.6, repeat_penalty=1.05, dry_multiplier=0.8, seed=11)
    backend = Recording(['CALL calculator.evaluate {"expression": "6 * 7"}', "ANSWER: It is 42."])
    kernel = Kernel(backend, DeviceRegistry.from_entry_points(), TurnOptions(prose=prose)).start()
    try:
        kernel.wait_ready(5)
        result = kernel.ask("What is 6 times 7?").result(10)
    finally:
        kernel.shutdown()
    assert result.answer == "It is 42." and result.syscalls[0]["result"] == "42"
    arguments = [p for p in backend.opened if "arguments" in p.purpose]
    answers = [p for p in backend.opened if "arguments" not in p.purpose]
    assert arguments and answers
    for params in arguments:
        assert (params.temperature, params.repeat_penalty, params.dry_multiplier) == (0.0, 1.0, 0.0)
    for params in answers:
        assert (params.temperature, params.repeat_penalty, params.dry_multiplier, params.seed) == (0.6, 1.05, 0.8, 11)


def test_the_config_keys_set_the_answer_sampling(tmp_path: Path):
    config = load_config(tmp_path / "none.toml", env={"LLMOS_DRY_MULTIPLIER": "0", "LLMOS_TEMPERATURE": "0.7"})
    prose = turn_options(config).prose
    assert (prose.temperature, prose.dry_multiplier, prose.repeat_penalty) == (0.7, 0.0, Prose().repeat_penalty)
    assert turn_options(load_config(tmp_path / "none.toml", env={})).prose == Prose()
    for key, value in (("temperature", -1.0), ("repeat_penalty", 0.5), ("dry_multiplier", 9.0)):
        with pytest.raises(ConfigError, match=key):
            load_config(tmp_path / "none.toml", env={}, overrides={key: value})


def test_greedy_is_greedy_alone_and_the_default_guards_against_loops():
    assert Prose.greedy().params(10, ()) == SamplingParams(max_tokens=10)
    default = Prose().params(10, ())
    assert default.dry_multiplier > 0 or default.repeat_penalty > 1.0
    assert "DRY" in Prose().describe() and Prose.greedy().describe() == "greedy"


# --- the real model -------------------------------------------------------------------------------

LOOP = "<|im_start|>user\nWrite the words 'la di da' over and over.<|im_end|>\n<|im_start|>assistant\n"
COPY = ("<|im_start|>user\nThe code is 4821-9931-2210-7765-1234-5559. Say the code back to me exactly."
        "<|im_end|>\n<|im_start|>assistant\n")
PID = 7101  # a pid no kernel in this run uses


def _text(backend, prompt: str, params: SamplingParams) -> tuple[str, str | None]:
    stream = backend.open(PID, prompt, params)
    pieces: list[str] = []
    try:
        while not stream.finished:
            pieces += stream.next(32)
    finally:
        stream.close()
        backend.release(PID)
    return "".join(pieces), stream.stats.finish_reason


@pytest.mark.model
def test_dry_ends_a_loop_greedy_decoding_keeps_up(real_backend):
    greedy, why = _text(real_backend, LOOP, SamplingParams(max_tokens=96))
    assert why == "length" and greedy.lower().count("la di da") >= 10  # greedy loops to the limit
    dry, why = _text(real_backend, LOOP, replace(Prose.greedy(), dry_multiplier=0.8).params(96, ()))
    assert why == "stop" and dry.lower().count("la di da") < greedy.lower().count("la di da"), dry


@pytest.mark.model
def test_the_penalties_never_read_the_prompt_so_a_given_code_is_copied_whole(real_backend):
    text, _ = _text(real_backend, COPY, Prose(repeat_penalty=1.1, dry_multiplier=0.8).params(40, ()))
    assert "4821-9931-2210-7765-1234-5559" in text, text


@pytest.mark.model
@pytest.mark.parametrize("value", ["10000000", "1111111", "7,000,000,007"])
def test_the_penalties_let_an_answer_copy_a_number_of_repeated_digits(real_backend, value):
    # Qwen writes digits one token each, so a number of repeated digits repeats a token many times
    prompt = (f"<|im_start|>user\nThe calculator returned {value}. Tell me the result.<|im_end|>\n"
              "<|im_start|>assistant\n")
    text, _ = _text(real_backend, prompt, Prose().params(40, ()))
    assert value in text, text


@pytest.mark.model
def test_a_seeded_temperature_draw_is_repeatable(real_backend):
    params = replace(Prose.greedy(), temperature=0.9, seed=1234).params(24, ())
    first, _ = _text(real_backend, LOOP, params)
    again, _ = _text(real_backend, LOOP, params)
    assert first and first == again


def test_the_repetition_penalty_skips_digits_and_punctuation():
    import numpy as np

    from llmos.kernel.backends.llamacpp import _UNPENALISED, penalise_repeats

    for text in ("0", "000", "Ġ7", ",", "Ġ", "Ċ", "%", "▁12"):
        assert _UNPENALISED.fullmatch(text), text
    for text in ("Ġthe", "He", "Ġknowledge", "a1"):
        assert not _UNPENALISED.fullmatch(text), text
    logits = np.array([2.0, -2.0, 3.0, 1.0], dtype=np.float32)
    skip = np.array([False, False, True, False])
    penalise_repeats(logits, [0, 1, 2, 0], replace(SamplingParams(), repeat_penalty=2.0, repeat_last_n=64), skip)
    assert logits.tolist() == [1.0, -4.0, 3.0, 1.0]  # 0 and 1 penalised once each, 2 skipped, 3 unseen
