"""Spoken numbers in a transcript, written as digits (peripherals/numbers.py): whisper writes
"four hundred and eight" or "4 hundred and 8", and the kernel reads 408 either way."""

from __future__ import annotations

import pytest

from llmos.peripherals.numbers import spoken_numbers


@pytest.mark.parametrize("heard, read", [
    ('what is four hundred and eight times twelve', 'what is 408 times 12'),
    ('what is 4 hundred and 8 times 12', 'what is 408 times 12'),
    ('twenty-four', '24'),
    ('twenty four apples', '24 apples'),
    ('three point five', '3.5'),
    ('one thousand two hundred and thirty four', '1234'),
    ('two million', '2000000'),
    ('a hundred dollars', '100 dollars'),
    ('seventeen times twenty four', '17 times 24'),
    ('one and two', 'one and 2'),
    ('five, six', '5, 6'),
    ('ninety nine', '99'),
    ('one hundred', '100'),
    ('2 thousand', '2000'),
    ('three hundred thousand', '300000'),
    ('twelve hundred', '1200'),
    ('zero', '0'),
    ('zero thousand', '0'),
    ('five point', '5 point'),
    ('forty two.', '42.'),
    ('two thousand five hundred', '2500'),
    ('one hundred and one', '101'),
    ('a thousand and one nights', '1001 nights'),
    ('sixty five point two five', '65.25'),
    ('eighty-eight km per hour', '88 km per hour'),
    ('four hundred eight', '408'),
    ('one hundred and', '100 and'),
    ('3 million', '3000000'),
])
def test_spoken_numbers_become_digits(heard: str, read: str) -> None:
    assert spoken_numbers(heard) == read


@pytest.mark.parametrize("heard", [
    'which one is better',
    'no one knows',
    'remember item 5 is in box 105',
    'a car',
    '100 and 12',
    'one',
    'what is one plus one',
    'the point is',
    'hundred',
    'and',
])
def test_words_that_are_not_a_number_phrase_stay(heard: str) -> None:
    assert spoken_numbers(heard) == heard


@pytest.mark.parametrize("heard", [
    "the twenty second of March", "twenty-first century", "his twenty-fifth birthday",  # ordinals
    "nineteen eighty four", "in nineteen ninety nine", "twenty twenty four",            # years
    "five thirty", "at seven fifteen", "twelve-thirty",                                 # times
    "five five five one two three four", "one two three",                               # digits said one by one
    "2,000 thousand", "1" * 5000,                                                        # grouped digits, an id
])
def test_numbers_that_digits_would_split_or_change_stay_as_said(heard: str) -> None:
    assert spoken_numbers(heard) == heard
