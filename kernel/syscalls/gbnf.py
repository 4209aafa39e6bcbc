"""llama.cpp's GBNF parser, in Python: would llama.cpp accept this grammar?

A faithful port of ``llama_grammar_parser::parse`` and the checks of ``llama_grammar_init_impl``
(llama.cpp ``src/llama-grammar.cpp``): the syntax and escapes, the repetition limit
(``MAX_REPETITION_THRESHOLD``: the rules a group creates, times the repetition applied to it),
undefined rules, a missing root and left recursion. llama.cpp answers a refused grammar with a
NULL sampler that llama-cpp-python does not check (a segfault), so every grammar is checked here
first, without a model. Iterative, not recursive: a string of 400 characters is 400 nested groups;
nesting deeper than ``MAX_GROUP_DEPTH`` is refused, since llama.cpp's recursive parser would
overflow its stack on it.
"""

from __future__ import annotations

import re

MAX_REPETITION_THRESHOLD = 2000  # llama-grammar.cpp
# llama.cpp's parser recurses twice per nested group, and only counts a group's rules once it
# has parsed all of it: 100,000 nested groups overflow the C++ stack before any limit is seen.
MAX_GROUP_DEPTH = 2500

END, ALT, RULE_REF, CHAR, CHAR_NOT, CHAR_RNG_UPPER, CHAR_ALT, CHAR_ANY = range(8)


class GbnfError(ValueError):
    """llama.cpp would refuse the grammar; the message says why, in one line."""


_NAME = re.compile(r"[A-Za-z0-9-]+")
_SPACE = re.compile(r"(?:[ \t]|#[^\r\n]*)*")
_SPACE_NL = re.compile(r"(?:[ \t\r\n]|#[^\r\n]*)*")
_PLAIN = re.compile(r'[^"\\]+')  # literal characters that need no escape


class _Frame:
    """One rule being parsed: a named rule, or a parenthesised group inside one."""

    __slots__ = ("rule", "name", "rule_id", "nested", "symbols_before", "last_sym_start", "n_prev_rules")

    def __init__(self, name: str, rule_id: int, nested: bool, symbols_before: int = 0) -> None:
        self.rule: list[tuple[int, int]] = []
        self.name, self.rule_id, self.nested, self.symbols_before = name, rule_id, nested, symbols_before
        self.new_sequence()

    def new_sequence(self) -> None:
        self.last_sym_start = len(self.rule)
        self.n_prev_rules = 1


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src.split("\0", 1)[0]  # C strings end at NUL
        self.symbols: dict[str, int] = {}
        self.rules: dict[int, list[tuple[int, int]]] = {}

    # --- lexical helpers (parse_space, parse_name, parse_char) ---------------------------

    def at(self, pos: int) -> str:
        return self.src[pos] if pos < len(self.src) else ""

    def space(self, pos: int, newline_ok: bool) -> int:
        return (_SPACE_NL if newline_ok else _SPACE).match(self.src, pos).end()  # type: ignore[union-attr]

    def name(self, pos: int) -> int:
        match = _NAME.match(self.src, pos)
        if match is None:
            raise GbnfError(f"expecting name at {self.src[pos:pos + 20]!r}")
        return match.end()

    def char(self, pos: int) -> tuple[int, int]:
        c = self.at(pos)
        if c == "\\":
            e = self.at(pos + 1)
            size = {"x": 2, "u": 4, "U": 8}.get(e)
            if size is not None:
                digits = self.src[pos + 2:pos + 2 + size]
                if len(digits) != size or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    raise GbnfError(f"expecting {size} hex chars at {self.src[pos:pos + 12]!r}")
                return int(digits, 16), pos + 2 + size
            if e in ("t", "r", "n"):
                return ord({"t": "\t", "r": "\r", "n": "\n"}[e]), pos + 2
            if e in ("\\", '"', "[", "]", "-"):
                return ord(e), pos + 2
            raise GbnfError(f"unknown escape at {self.src[pos:pos + 12]!r}")
        if c:
            return ord(c), pos + 1
        raise GbnfError("unexpected end of input")

    def symbol(self, name: str) -> int:
        return self.symbols.setdefault(name, len(self.symbols))

    def generated_symbol(self, base: str) -> int:
        next_id = len(self.symbols)
        self.symbols[f"{base}_{next_id}"] = next_id
        return next_id

    # --- rules ---------------------------------------------------------------------------

    def parse(self) -> None:
        pos = self.space(0, True)
        while pos < len(self.src):
            end = self.name(pos)
            name = self.src[pos:end]
            rule_id = self.symbol(name)
            pos = self.space(end, False)
            if self.src[pos:pos + 3] != "::=":
                raise GbnfError(f"expecting ::= at {self.src[pos:pos + 20]!r}")
            pos = self.alternates(self.space(pos + 3, True), name, rule_id)
            c = self.at(pos)
            if c == "\r":
                pos += 2 if self.at(pos + 1) == "\n" else 1
            elif c == "\n":
                pos += 1
            elif c:
                raise GbnfError(f"expecting newline or end at {self.src[pos:pos + 20]!r}")
            pos = self.space(pos, True)

    def alternates(self, pos: int, name: str, rule_id: int) -> int:
        """parse_alternates and parse_sequence, with groups on an explicit stack."""
        stack = [_Frame(name, rule_id, nested=False)]
        while True:
            frame = stack[-1]
            c = self.at(pos)
            if c == '"':
                pos += 1
                frame.new_sequence()
                while self.at(pos) != '"':
                    plain = _PLAIN.match(self.src, pos)
                    if plain is not None:
                        frame.rule.extend((CHAR, ord(ch)) for ch in plain.group())
                        pos = plain.end()
                        continue
                    value, pos = self.char(pos)
                    frame.rule.append((CHAR, value))
                pos = self.space(pos + 1, frame.nested)
            elif c == "[":
                pos += 1
                start = CHAR
                if self.at(pos) == "^":
                    pos, start = pos + 1, CHAR_NOT
                frame.new_sequence()
                while self.at(pos) != "]":
                    value, pos = self.char(pos)
                    frame.rule.append((CHAR_ALT if frame.last_sym_start < len(frame.rule) else start, value))
                    if self.at(pos) == "-" and self.at(pos + 1) != "]":
                        if not self.at(pos + 1):
                            raise GbnfError("unexpected end of input")
                        upper, pos = self.char(pos + 1)
                        frame.rule.append((CHAR_RNG_UPPER, upper))
                pos = self.space(pos + 1, frame.nested)
            elif c in ("<", "!"):
                raise GbnfError("token references need the model's vocabulary")
            elif _NAME.match(c):
                end = self.name(pos)
                ref = self.symbol(self.src[pos:end])
                pos = self.space(end, frame.nested)
                frame.new_sequence()
                frame.rule.append((RULE_REF, ref))
            elif c == "(":
                pos = self.space(pos + 1, True)
                before = len(self.symbols)
                if len(stack) > MAX_GROUP_DEPTH:
                    raise GbnfError(f"groups nested more than {MAX_GROUP_DEPTH} deep (llama.cpp's parser "
                                    "would overflow its stack)")
                stack.append(_Frame(frame.name, self.generated_symbol(frame.name), True, before))
            elif c == ".":
                frame.new_sequence()
                frame.rule.append((CHAR_ANY, 0))
                pos = self.space(pos + 1, frame.nested)
            elif c in ("*", "+", "?"):
                pos = self.space(pos + 1, frame.nested)
                self.repeat(frame, *{"*": (0, None), "+": (1, None), "?": (0, 1)}[c])
            elif c == "{":
                pos = self.braces(frame, self.space(pos + 1, frame.nested))
            elif c == "|":
                frame.rule.append((ALT, 0))
                pos = self.space(pos + 1, True)
                frame.new_sequence()
            else:  # the end of this rule or group
                frame.rule.append((END, 0))
                self.rules[frame.rule_id] = frame.rule
                if len(stack) == 1:
                    return pos
                stack.pop()
                if c != ")":
                    raise GbnfError(f"expecting ')' at {self.src[pos:pos + 20]!r}")
                outer = stack[-1]
                outer.n_prev_rules = max(1, len(self.symbols) - frame.symbols_before)
                outer.last_sym_start = len(outer.rule)
                outer.rule.append((RULE_REF, frame.rule_id))
                pos = self.space(pos + 1, outer.nested)

    def braces(self, frame: _Frame, pos: int) -> int:
        def integer(p: int) -> tuple[int, int]:
            end = p
            while self.at(end).isascii() and self.at(end).isdigit():
                end += 1
            if end == p:
                raise GbnfError(f"expecting an int at {self.src[p:p + 20]!r}")
            return int(self.src[p:end]), self.space(end, frame.nested)

        low, pos = integer(pos)
        high: int | None = None
        if self.at(pos) == "}":
            high = low
        elif self.at(pos) == ",":
            pos = self.space(pos + 1, frame.nested)
            if self.at(pos).isascii() and self.at(pos).isdigit():
                high, pos = integer(pos)
            if self.at(pos) != "}":
                raise GbnfError(f"expecting '}}' at {self.src[pos:pos + 20]!r}")
        else:
            raise GbnfError(f"expecting ',' at {self.src[pos:pos + 20]!r}")
        if low > MAX_REPETITION_THRESHOLD:
            raise GbnfError("number of repetitions exceeds sane defaults")
        if high is not None and high > MAX_REPETITION_THRESHOLD:
            high = None
        if high is not None and high < low:  # llama.cpp would loop for 2^64 rules
            raise GbnfError(f"repetition {{{low},{high}}} has its maximum below its minimum")
        self.repeat(frame, low, high)
        return self.space(pos + 1, frame.nested)

    def repeat(self, frame: _Frame, low: int, high: int | None) -> None:
        """handle_repetitions: S{m,n} -> S m times, then n-m nested optional rules."""
        if frame.last_sym_start == len(frame.rule):
            raise GbnfError("expecting preceding item to */+/?/{")
        previous = frame.rule[frame.last_sym_start:]
        total = high if high else (low if low > 0 else 1)
        if frame.n_prev_rules * total > MAX_REPETITION_THRESHOLD:
            raise GbnfError(
                f"number of rules that are going to be repeated ({frame.n_prev_rules}) multiplied by "
                f"the new repetition ({total}) exceeds llama.cpp's limit of {MAX_REPETITION_THRESHOLD}")
        if low == 0:
            del frame.rule[frame.last_sym_start:]
        else:
            frame.rule.extend(previous * (low - 1))
        last = 0
        n_opt = 1 if high is None else high - low
        for i in range(n_opt):
            rec_id = self.generated_symbol(frame.name)
            rec = list(previous)
            if i > 0 or high is None:
                rec.append((RULE_REF, rec_id if high is None else last))
            self.rules[rec_id] = [*rec, (ALT, 0), (END, 0)]
            last = rec_id
        if n_opt > 0:
            frame.rule.append((RULE_REF, last))
        frame.n_prev_rules *= total


def _left_recursive(rules: list[list[tuple[int, int]]]) -> int | None:
    """llama_grammar_detect_left_recursion over every rule, iteratively: the index of a rule
    that can reach itself before consuming a character, or None."""
    n = len(rules)
    visited, in_progress, may_be_empty = [False] * n, [False] * n, [False] * n

    def enter(index: int) -> list[int]:
        in_progress[index] = True
        at_start = True  # does some alternative of the rule match the empty string?
        for kind, _ in rules[index]:
            if kind in (END, ALT):
                if at_start:
                    may_be_empty[index] = True
                    break
                at_start = True
            else:
                at_start = False
        return [index, 0, 1]  # the rule, its next element, still looking at leftmost symbols

    for first in range(n):
        if visited[first]:
            continue
        stack = [enter(first)]
        while stack:
            frame = stack[-1]
            index, i, recurse = frame
            rule = rules[index]
            if i == len(rule):
                in_progress[index], visited[index] = False, True
                stack.pop()
                if stack and not may_be_empty[index]:
                    stack[-1][2] = 0
                continue
            kind, value = rule[i]
            frame[1] = i + 1
            if kind == RULE_REF and recurse:
                if in_progress[value]:
                    return value
                if not visited[value]:
                    stack.append(enter(value))
                elif not may_be_empty[value]:
                    frame[2] = 0
            else:
                frame[2] = 1 if kind in (END, ALT) else 0
    return None


def check(grammar: str, root: str = "root") -> int:
    """Raise GbnfError when llama.cpp would refuse ``grammar``; else return its number of rules."""
    try:
        grammar.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GbnfError(f"the grammar is not valid UTF-8 ({exc.reason})") from None
    parser = _Parser(grammar)
    parser.parse()
    if not parser.rules:
        raise GbnfError("the grammar has no rules")
    names = {v: k for k, v in parser.symbols.items()}
    for rule in parser.rules.values():
        for kind, value in rule:
            if kind == RULE_REF and value not in parser.rules:
                raise GbnfError(f"undefined rule identifier {names.get(value, value)!r}")
    if root not in parser.symbols:
        raise GbnfError(f"the grammar has no {root!r} rule")
    size = max(parser.rules) + 1
    if len(parser.rules) != size:
        raise GbnfError("undefined rule")
    ordered = [parser.rules[i] for i in range(size)]
    recursive = _left_recursive(ordered)
    if recursive is not None:
        raise GbnfError(f"left recursion in rule {names.get(recursive, recursive)!r}")
    return size
