"""The long-form set (bench/data/longform.json) and its measure (bench/bench_prose.py), fast."""

from __future__ import annotations

from tests.benches import bench_module


def _bench():
    return bench_module("prose")


def test_the_set_has_twenty_prompts_apart_from_the_tuning_ones():
    bench = _bench()
    judged, tuning = bench.load(), bench.load(bench.TUNING)
    assert len(judged) >= 20 and len(set(judged)) == len(judged)
    assert tuning and not set(judged) & set(tuning)


def test_repeated_four_grams_count_repeats_within_an_answer_only():
    bench = _bench()
    assert bench.four_grams("one two three four five") == (2, 0)
    loop = " ".join(["he had to keep going."] * 5)  # 25 words, 22 4-grams, 5 distinct
    assert bench.four_grams(loop) == (22, 17)
    assert bench.repeated_share(["The Cat sat on the mat", "the cat sat on the mat"]) == 0.0
    assert bench.repeated_share([loop]) > bench.LOOPING > bench.repeated_share(["a b c d e f g"])
    assert bench.repeated_share([]) == 0.0
