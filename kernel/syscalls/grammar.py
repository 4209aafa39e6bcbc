"""A call's JSON schema as a grammar llama.cpp accepts, or one line saying why not.

The arguments of a call are generated under a grammar made from its schema
(llama-cpp-python's ``json_schema_to_gbnf``). Some schemas make grammars llama.cpp refuses
(``maxLength: 2000`` becomes 2000 nested optional groups, over its repetition limit), and a
refused grammar is a NULL sampler that llama-cpp-python does not check: a segfault. So:

- :func:`bounded_schema` makes the schema the grammar is built from: strings at most
  ``MAX_STRING_LENGTH`` characters, arrays at most ``MAX_ITEMS`` items, enums of more than
  ``MAX_ENUM`` members widened to their type, patterns the converter cannot translate dropped,
  local ``$ref`` inlined, ``allOf`` merged, ``anyOf``/``oneOf`` siblings merged into each branch,
  keywords the converter ignores dropped. What it loosens (a real ``maxLength`` of 2000, a
  pattern, ``minimum``) is still checked after generation: the dispatcher validates the
  arguments against the call's own schema.
- What cannot be bounded is refused: a ``minLength`` or ``minItems`` no generation can reach,
  nesting deeper than ``MAX_DEPTH``, a ``$ref`` cycle or a remote ``$ref``, a schema that is not
  an object, a schema or a grammar too large to check quickly.
- :func:`to_gbnf` converts and checks the result with :mod:`.gbnf` (llama.cpp's parser, in
  Python), so a device is refused when it is registered, never when the model is running.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .gbnf import GbnfError, check
from ..devices import one_line

MAX_STRING_LENGTH = 400  # characters of one string argument (the grammar's nesting)
MAX_ITEMS = 100
MAX_ENUM = 256
MAX_BRANCHES = 256  # anyOf / oneOf
MAX_PROPERTIES = 500  # of one object (the converter recurses once per optional property)
MAX_DEPTH = 24  # nested schemas (properties, items, branches)
MAX_NODES = 4000  # schemas in all, after $ref are inlined
MAX_GRAMMAR_CHARS = 200_000  # about 60 strings of the full length; checked in about a second

# What json_schema_to_gbnf reads; anything else only matters to validation.
_KEPT = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
    "maxItems", "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "pattern", "format",
}
_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
_IMPLIES = (  # a schema without "type" but with these keywords has that type
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("array", ("items", "prefixItems", "minItems", "maxItems")),
    ("object", ("properties", "required", "additionalProperties")),
)
_ANY = {"anyOf": [{"type": "string", "maxLength": MAX_STRING_LENGTH}, {"type": "number"},
                  {"type": "boolean"}, {"type": "null"}, {"type": "object"}, {"type": "array"}]}


class GrammarError(ValueError):
    """A call whose arguments cannot be generated under a grammar; one line."""

    def __init__(self, reason: str, device: str = "", call: str = "") -> None:
        self.reason, self.device, self.call = reason, device, call
        where = f"device {device}, call {call}: " if device else ""
        super().__init__(f"{where}{reason}")

    def at(self, device: str, call: str) -> "GrammarError":
        """The same error, naming the device and the call."""
        return GrammarError(self.reason, device, call)


def bounded_schema(schema: Any) -> dict[str, Any]:
    """The schema the call's grammar is built from (see the module docstring)."""
    if not isinstance(schema, dict):
        raise GrammarError(f"its schema is a {type(schema).__name__}, not a JSON object")
    return _Bounder(schema).root()


@functools.cache
def _converter() -> Callable[[str], str]:
    """llama-cpp-python's ``json_schema_to_gbnf``, without importing the ``llama_cpp`` package:
    its ``__init__`` loads the native library, and which build to load is chosen later, when the
    model loads (``backends/engine.py``). ``llama_grammar.py`` itself is pure Python."""
    module = sys.modules.get("llama_cpp.llama_grammar")
    if module is None:
        package = importlib.util.find_spec("llama_cpp")
        if package is None or not package.submodule_search_locations:
            raise GrammarError("llama-cpp-python is not installed: no grammar can be built")
        path = Path(list(package.submodule_search_locations)[0]) / "llama_grammar.py"
        spec = importlib.util.spec_from_file_location("llmos_llama_grammar", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.json_schema_to_gbnf


def to_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF grammar of a bounded schema, checked as llama.cpp would check it."""
    return _gbnf(json.dumps(schema))


@functools.lru_cache(maxsize=256)
def _gbnf(schema: str) -> str:
    """``to_gbnf`` of a schema's JSON text: converted and checked once (a few ms a call), as every
    registry and every generated call's arguments ask for the same grammars again."""
    try:
        grammar = _converter()(schema)
    except RecursionError:
        raise GrammarError("its schema is nested too deeply for the grammar converter") from None
    except Exception as exc:  # the converter's asserts and ValueErrors
        raise GrammarError(f"its schema cannot become a grammar ({one_line(exc, 160)})") from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"its grammar would be {len(grammar):,} characters (at most {MAX_GRAMMAR_CHARS:,})")
    try:
        check(grammar)
    except GbnfError as exc:
        raise GrammarError(f"llama.cpp would refuse its grammar: {exc}") from None
    return grammar


def check_call(device: str, call: str, schema: Any) -> str:
    """The grammar of a call's arguments; GrammarError naming the device and the call if none."""
    try:
        return to_gbnf(bounded_schema(schema))
    except GrammarError as exc:
        raise exc.at(device, call) from None




class _Bounder:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.nodes = 0
        self.resolving: list[str] = []

    def root(self) -> dict[str, Any]:
        out = self.node(self.document, 0)
        for branch in out.get("anyOf", [out]):
            if branch.get("type") != "object":
                kind = branch.get("type") or ("a constant" if "const" in branch else "an enum" if "enum" in branch
                                              else "any value")
                raise GrammarError(f"its arguments must be a JSON object, not {kind}")
        return out

    def node(self, schema: Any, depth: int) -> dict[str, Any]:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise GrammarError(f"its schema has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise GrammarError(f"its schema is nested more than {MAX_DEPTH} levels deep")
        if schema is True:
            return copy.deepcopy(_ANY)
        if not isinstance(schema, dict):
            what = "false (nothing is valid)" if schema is False else f"a {type(schema).__name__}"
            raise GrammarError(f"a part of its schema is {what}")
        if "$ref" in schema:
            return self.ref(schema, depth)
        schema = self.merge_all_of(schema)
        if isinstance(schema.get("type"), list):
            return self.type_union(schema, depth)
        out = {k: v for k, v in schema.items() if k in _KEPT}
        for branches in ("anyOf", "oneOf"):
            if branches in out:
                return self.union(out, branches, depth)
        if "const" in out:
            return {"const": out["const"]}
        if "enum" in out:
            return self.enum(out)
        kind = out.get("type")
        if kind is None:
            kind = next((t for t, keys in _IMPLIES if any(k in out for k in keys)), None)
            if kind is None:
                return copy.deepcopy(_ANY)
            out["type"] = kind
        if kind not in _TYPES:
            raise GrammarError(f"its schema has an unknown type {kind!r}")
        if kind == "string":
            return self.string(out)
        if kind == "array":
            return self.array(out, depth)
        if kind == "object":
            return self.object(out, depth)
        return {"type": kind}

    # --- keywords --------------------------------------------------------------------------

    def ref(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise GrammarError(f"its schema refers to {ref!r}, outside the schema (only local $ref are resolved)")
        if ref in self.resolving:
            raise GrammarError(f"its schema's $ref {ref} refers to itself (a cycle)")
        target: Any = self.document
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise GrammarError(f"its schema's $ref {ref} points at nothing")
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        if siblings and isinstance(target, dict):
            target = _merged(target, siblings)
        self.resolving.append(ref)
        try:
            return self.node(target, depth + 1)
        finally:
            self.resolving.pop()

    def merge_all_of(self, schema: dict[str, Any]) -> dict[str, Any]:
        parts = schema.get("allOf")
        if parts is None:
            return schema
        if not isinstance(parts, list) or not all(isinstance(p, dict) and "$ref" not in p for p in parts):
            raise GrammarError("its schema's allOf is not a list of plain schemas")
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            merged = _merged(merged, self.merge_all_of(part))
        return merged

    def type_union(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        kinds = schema["type"]
        if not kinds:
            raise GrammarError("its schema has an empty list of types")
        if len(kinds) == 1:
            return self.node({**schema, "type": kinds[0]}, depth)
        return self.node({"anyOf": [{**schema, "type": t} for t in kinds]}, depth)

    def union(self, out: dict[str, Any], key: str, depth: int) -> dict[str, Any]:
        branches = out.pop(key)
        out.pop("anyOf" if key == "oneOf" else "oneOf", None)
        if not isinstance(branches, list) or not branches:
            raise GrammarError(f"its schema's {key} is not a non-empty list")
        if len(branches) > MAX_BRANCHES:
            raise GrammarError(f"its schema's {key} has {len(branches)} branches (at most {MAX_BRANCHES})")
        # {"type": "object", "properties": ..., "anyOf": [{"required": ["a"]}, ...]}: the
        # converter reads only the branches, so each branch gets what is beside it
        bounded = [self.node(_merged(out, b) if out and isinstance(b, dict) else b, depth + 1)
                   for b in branches]
        return bounded[0] if len(bounded) == 1 else {"anyOf": bounded}

    def enum(self, out: dict[str, Any]) -> dict[str, Any]:
        members = out["enum"]
        if not isinstance(members, list) or not members:
            raise GrammarError("its schema's enum is not a non-empty list")
        if len(members) <= MAX_ENUM:
            return {"enum": members}
        # too many alternatives for the sampler: any value of their type, checked afterwards
        kinds = {"string" if isinstance(m, str) else "integer" if isinstance(m, int) and not isinstance(m, bool)
                 else "number" if isinstance(m, float) else "other" for m in members}
        if kinds == {"integer", "number"}:
            kinds = {"number"}
        if len(kinds) != 1 or kinds == {"other"}:
            raise GrammarError(f"its schema has an enum of {len(members)} mixed values (at most {MAX_ENUM})")
        kind = kinds.pop()
        return {"type": kind, "maxLength": MAX_STRING_LENGTH} if kind == "string" else {"type": kind}

    def string(self, out: dict[str, Any]) -> dict[str, Any]:
        low, high = _bounds(out, "Length", MAX_STRING_LENGTH, "a string argument", "be at least {} characters")
        result: dict[str, Any] = {"type": "string"}
        pattern = out.get("pattern")
        if isinstance(pattern, str) and _pattern_compiles(pattern):
            result["pattern"] = pattern
            return result
        if isinstance(out.get("format"), str):
            result["format"] = out["format"]
        if low:
            result["minLength"] = low
        result["maxLength"] = MAX_STRING_LENGTH if high is None else min(high, MAX_STRING_LENGTH)
        return result

    def array(self, out: dict[str, Any], depth: int) -> dict[str, Any]:
        low, high = _bounds(out, "Items", MAX_ITEMS, "an array argument", "have at least {} items")
        result: dict[str, Any] = {"type": "array"}
        prefix = out.get("prefixItems", out.get("items") if isinstance(out.get("items"), list) else None)
        if prefix is not None:
            if not isinstance(prefix, list) or len(prefix) > MAX_ITEMS:
                raise GrammarError(f"an array argument has more than {MAX_ITEMS} fixed items")
            result["prefixItems"] = [self.node(item, depth + 1) for item in prefix]
            return result
        result["items"] = self.node(out.get("items", True), depth + 1)
        if low:
            result["minItems"] = low
        result["maxItems"] = MAX_ITEMS if high is None else min(high, MAX_ITEMS)
        return result

    def object(self, out: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = out.get("properties", {})
        if not isinstance(properties, dict):
            raise GrammarError("its schema's properties is not an object")
        if len(properties) > MAX_PROPERTIES:
            raise GrammarError(f"an object in its schema has {len(properties)} properties (at most {MAX_PROPERTIES})")
        required = out.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise GrammarError("its schema's required is not a list of names")
        result: dict[str, Any] = {"type": "object"}
        if "properties" in out:  # no properties at all: any object; an empty dict: only {}
            result["properties"] = {str(k): self.node(v, depth + 1) for k, v in properties.items()}
            result["required"] = [r for r in required if r in properties]
        extra = out.get("additionalProperties")
        if isinstance(extra, dict):
            result["additionalProperties"] = self.node(extra, depth + 1)
        elif extra is False:
            result["additionalProperties"] = False
        return result


def _merged(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``more`` over ``base``; properties and required are joined."""
    out = {**base, **more}
    if isinstance(base.get("properties"), dict) and isinstance(more.get("properties"), dict):
        out["properties"] = {**base["properties"], **more["properties"]}
    if isinstance(base.get("required"), list) and isinstance(more.get("required"), list):
        out["required"] = list(dict.fromkeys([*base["required"], *more["required"]]))
    return out


def _bounds(out: dict[str, Any], suffix: str, cap: int, what: str, at_least: str) -> tuple[int, int | None]:
    """``(min, max)`` of ``minLength``/``maxLength`` (``suffix`` "Length") or ``minItems``/``maxItems``,
    checked: integers, a minimum the bounded grammar can still meet, a maximum not below it."""
    low, high = out.get(f"min{suffix}", 0), out.get(f"max{suffix}")
    if not isinstance(low, int) or (high is not None and not isinstance(high, int)):
        raise GrammarError(f"its schema has a min{suffix} or max{suffix} that is not an integer")
    if low > cap:
        raise GrammarError(f"{what} must {at_least.format(low)}, more than the {cap} a call's arguments can hold")
    if high is not None and high < low:
        raise GrammarError(f"{what} has max{suffix} {high} below its min{suffix} {low}")
    return low, high


def _pattern_compiles(pattern: str) -> bool:
    """Does the converter translate ``pattern`` into a grammar llama.cpp takes? (Else the
    pattern is left to validation.)"""
    try:
        to_gbnf({"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}})
    except GrammarError:
        return False
    return True
