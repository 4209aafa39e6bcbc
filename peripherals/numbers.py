"""Numbers said in words, written as digits: what whisper hears becomes what the kernel reads.

Whisper writes a spoken number sometimes in digits, sometimes in words, and sometimes mixed:
"four hundred and eight", "4 hundred and 8", "twenty-four", "three point five". The calculator
and the model read digits, so a transcript's numbers are rewritten before the kernel sees them
(issue 17, item 1): "what is 4 hundred and 8 times twelve" becomes "what is 408 times 12".

Only number phrases change. A lone "one" stays a word ("which one", "no one"), "and" joins parts
only after a hundred, thousand, million or billion ("four hundred and eight", but "one and two"
stays two numbers), and phrases separated by punctuation stay apart ("five, six").
"""

from __future__ import annotations

import re

__all__ = ["spoken_numbers"]

_SMALL = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {word: 10 * (i + 2) for i, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9}
_TOKEN = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?")
_ORDINALS = frozenset("first second third fourth fifth sixth seventh eighth ninth".split())
_MAX_DIGITS = 15  # a longer run of digits is an id or a code, not a number said aloud
_JOINER = re.compile(r"^[ \t-]*$")  # what may stand between the words of one number


def _value(word: str) -> int | None:
    return _SMALL.get(word, _TENS.get(word))


class _Phrase:
    """One number being read, word by word (``add`` says whether the word belonged to it)."""

    def __init__(self) -> None:
        self.total = 0
        self.current = 0
        self.words = 0
        self.last = ""        # "small", "tens", "hundred", "scale", "digits", "and", "point"
        self.decimals = ""

    def add(self, word: str, following: str | None) -> bool:
        low = word.lower()
        if self.last == "point":  # "three point one four": only digit words go on after the point
            if low in _SMALL and _SMALL[low] < 10:
                self.decimals += str(_SMALL[low])
                return True
            return False
        if low == "point" and self.words and self.last in ("small", "tens", "digits") and following is not None \
                and following.lower() in _SMALL and _SMALL[following.lower()] < 10:
            self.last = "point"
            return True
        if low == "and":
            joins = self.last in ("hundred", "scale") and following is not None and (
                following.lower() in _SMALL or following.lower() in _TENS or
                (following.isdigit() and int(following) < 100))
            if joins:
                self.last = "and"
            return joins
        if low == "a" and not self.words:  # "a hundred", "a thousand"
            starts = following is not None and (following.lower() == "hundred" or following.lower() in _SCALES)
            if starts:
                self.last = "a"
            return starts
        if word.isdigit():
            if len(word) > _MAX_DIGITS:
                return False
            value = int(word)
            if self.last in ("small", "tens", "digits") or (self.words and value >= 100 and self.last != "scale"):
                return False
            if self.last in ("hundred", "and", "scale") and self.current % 100 == 0 and value < 100:
                self.current += value
            elif not self.words:
                self.current = value
            else:
                return False
            self.words += 1
            self.last = "digits"
            return True
        value = _value(low)
        if value is not None:
            if self.last in ("small", "digits") or (self.last == "tens" and value >= 10):
                return False
            if self.last == "tens" and self.current % 10 != 0:
                return False
            self.current += value
            self.words += 1
            self.last = "tens" if low in _TENS else "small"
            return True
        if low == "hundred":  # "a hundred", "four hundred", "twelve hundred", "2 thousand 5 hundred"
            if self.last == "a":
                self.current = 100
            elif self.last in ("small", "tens", "digits") and 0 < self.current < 100:
                self.current *= 100
            else:
                return False
            self.words += 1
            self.last = "hundred"
            return True
        if low in _SCALES and self.last in ("small", "tens", "digits", "hundred", "a"):
            self.total += (1 if self.last == "a" else self.current) * _SCALES[low]
            self.current = 0
            self.words += 1
            self.last = "scale"
            return True
        return False

    def text(self) -> str:
        whole = self.total + self.current
        return f"{whole}.{self.decimals}" if self.decimals else str(whole)


def _phrase_end(text: str, tokens: list[re.Match[str]], i: int) -> tuple[int, _Phrase]:
    """Where the number phrase starting at token ``i`` ends (``i`` when none starts there), and
    the phrase read."""
    phrase, j = _Phrase(), i
    while j < len(tokens):
        if j > i and not _JOINER.match(text[tokens[j - 1].end():tokens[j].start()]):
            break
        following = tokens[j + 1].group() if j + 1 < len(tokens) and _JOINER.match(
            text[tokens[j].end():tokens[j + 1].start()]) else None
        if not phrase.add(tokens[j].group(), following):
            break
        j += 1
    while j > i and tokens[j - 1].group().lower() in ("and", "point", "a"):  # a joiner left hanging
        j -= 1  # (it added nothing to the phrase's value)
    return j, phrase


def _joined(text: str, tokens: list[re.Match[str]], j: int) -> bool:
    """Does token ``j`` follow token ``j - 1`` with only a space or hyphen between?"""
    return 0 < j < len(tokens) and bool(_JOINER.match(text[tokens[j - 1].end():tokens[j].start()]))


def spoken_numbers(text: str) -> str:
    """``text`` with its spoken numbers in digits; everything else as it was.

    Left as said: a phrase right before an ordinal ("the twenty second of March"), and phrases
    that follow each other with only a space between: years, times and digit strings ("nineteen
    eighty four", "five thirty", "five five five one two"), which digits would split apart."""
    tokens = list(_TOKEN.finditer(text))
    out: list[str] = []
    done = 0  # how much of text is in out
    i = 0
    while i < len(tokens):
        start = tokens[i].start()
        inside = start > 0 and text[start - 1] in ",." and text[max(0, start - 2):start - 1].isdigit()  # 2,000
        j, phrase = (i, None) if inside else _phrase_end(text, tokens, i)
        if j == i:
            i += 1
            continue
        run_end = j
        while _joined(text, tokens, run_end) and (next_end := _phrase_end(text, tokens, run_end)[0]) > run_end:
            run_end = next_end  # another number right after this one: a year, a time, digits
        spoken = [t.group().lower() for t in tokens[i:j]]
        ordinal = _joined(text, tokens, j) and tokens[j].group().lower() in _ORDINALS
        alone = run_end == j and not ordinal
        if alone and phrase is not None and not all(w.isdigit() for w in spoken) and spoken not in (["one"], ["a"]):
            out.append(text[done:start])
            out.append(phrase.text())
            done = tokens[j - 1].end()
        i = run_end
    out.append(text[done:])
    return "".join(out)
