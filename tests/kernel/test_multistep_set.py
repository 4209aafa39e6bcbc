"""The multi-step set (bench/data/multistep.json) and its judge (bench/bench_multistep.py), fast:
the set is what the issue asks for, and an answer counts only when it states the exact value."""

from __future__ import annotations

from fractions import Fraction

from tests.benches import bench_module


def _bench():
    return bench_module("multistep")


def test_the_set_has_thirty_problems_or_more_with_exact_answers():
    problems = _bench().load()
    assert len(problems) >= 30
    assert len({p["id"] for p in problems}) == len(problems)
    assert {"units", "word", "percent"} <= {p["kind"] for p in problems}
    for p in problems:
        Fraction(p["answer"])  # an exact number, not a rounded float's repr
        assert p["q"].endswith("?") or p["q"].endswith(".")


def test_an_answer_is_exact_only_when_one_of_its_numbers_is_the_value():
    bench = _bench()
    assert bench.exact("There are 50,400 minutes in 5 weeks.", "50400")
    assert bench.exact("It costs 1237.50 dollars.", "1237.5")
    assert not bench.exact("About 50,000 minutes.", "50400")
    assert not bench.exact("It is 504000.", "50400")
    assert not bench.exact("12.5 percent", "12")


def test_quick_asks_one_problem_of_each_of_three_kinds():
    bench = _bench()
    quick = bench.chosen(bench.load(), quick=True)
    assert [p["kind"] for p in quick] == list(bench.QUICK_KINDS)
