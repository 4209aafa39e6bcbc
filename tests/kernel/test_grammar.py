"""Every call's schema becomes a grammar llama.cpp accepts, or the call is refused in one line.

Fast: the bounded schemas and the Python port of llama.cpp's grammar parser. The same grammars
compiled by llama.cpp itself are in test_grammar_model.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import jsonschema
import pytest

from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.devices import Device
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry, UnknownCall
from llmos.kernel.syscalls.gbnf import GbnfError, check
from llmos.kernel.syscalls.grammar import (
    MAX_ENUM, MAX_ITEMS, MAX_STRING_LENGTH, GrammarError, _converter, bounded_schema, check_call, to_gbnf,
)
from llmos.kernel.turn import TurnOptions, boot_messages


def obj(**properties) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties)}


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = obj(x=schema)
    return schema


def raw_grammar(schema) -> str:
    """What llama-cpp-python would hand llama.cpp for the schema as it is."""
    return _converter()(json.dumps(schema))


# Schemas a third-party plugin or MCP server might send. Each is bounded into a grammar llama.cpp
# accepts (None) or refused with a reason containing the given words.
HOSTILE: dict[str, tuple[object, str | None]] = {
    "maxLength 2000": (obj(text={"type": "string", "maxLength": 2000}), None),
    "maxLength 100000": (obj(text={"type": "string", "maxLength": 100_000}), None),
    "minLength 5000": (obj(text={"type": "string", "minLength": 5000}), "at least 5000 characters"),
    "maxItems 10000": (obj(items={"type": "array", "items": {"type": "string"}, "maxItems": 10_000}), None),
    "minItems 10000": (obj(items={"type": "array", "minItems": 10_000}), "at least 10000 items"),
    "nested 60 deep": (nested(60), "nested more than"),
    "nested 5000 deep": (nested(5000), "nested more than"),
    "enum of 5000": (obj(choice={"enum": [f"option {i}" for i in range(5000)]}), None),
    "enum of 5000 mixed": (obj(choice={"enum": [*range(2500), *map(str, range(2500))]}), "mixed values"),
    "lookahead pattern": (obj(code={"type": "string", "pattern": "^(?=[a-z])\\w+$"}), None),
    "backreference pattern": (obj(code={"type": "string", "pattern": "^(a+)\\1$"}), None),
    "unanchored pattern": (obj(code={"type": "string", "pattern": "[0-9]{3,5000}"}), None),
    "$ref cycle": ({"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}},
                    "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}, "cycle"),
    "recursive $ref": ({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}},
                       "cycle"),
    "remote $ref": (obj(a={"$ref": "https://example.com/schema.json"}), "outside the schema"),
    "dangling $ref": (obj(a={"$ref": "#/$defs/missing"}), "points at nothing"),
    "anyOf of 200": (obj(v={"anyOf": [{"const": f"c{i}"} for i in range(200)]}), None),
    "anyOf of 300": (obj(v={"anyOf": [{"const": f"c{i}"} for i in range(300)]}), "300 branches"),
    "a list": (["type", "object"], "is a list"),
    "a string": ("object", "is a str"),
    "false": (obj(x=False), "nothing is valid"),
    "not an object": ({"type": "string"}, "must be a JSON object"),
    "unknown keywords": ({"type": "object", "x-vendor": {"a": 1}, "frobnicate": True, "properties": {
        "n": {"type": "integer", "minimum": 3, "multipleOf": 7, "x-unit": "cm"},
        "s": {"type": "string", "not": {"const": "no"}, "contentEncoding": "base64"}}}, None),
    "unknown type": (obj(x={"type": "decimal"}), "unknown type"),
    "type list": (obj(x={"type": ["string", "null"], "maxLength": 5000}), None),
    "backspace in an enum": (obj(x={"enum": ["a\bb"]}), "unknown escape"),
    "many optional properties": ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(300)}},
                                 None),
    "2000 optional properties": ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(2000)}},
                                 "2000 properties"),
    "300 long strings": (obj(**{f"s{i}": {"type": "string"} for i in range(300)}), "characters (at most"),
    "minLength over maxLength": (obj(x={"type": "string", "minLength": 10, "maxLength": 5}), "below its minLength"),
}

MCP_TOOL = {  # the shape of a real MCP tool's inputSchema (pydantic-generated)
    "$defs": {"Priority": {"enum": ["low", "normal", "high"], "title": "Priority", "type": "string"},
              "Attachment": {"properties": {"url": {"format": "uri", "type": "string", "maxLength": 2083},
                                            "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}},
                             "required": ["url"], "title": "Attachment", "type": "object"}},
    "additionalProperties": False,
    "properties": {
        "title": {"title": "Title", "type": "string", "maxLength": 4096},
        "body": {"title": "Body", "type": "string", "description": "Markdown"},
        "priority": {"$ref": "#/$defs/Priority", "default": "normal"},
        "attachments": {"items": {"$ref": "#/$defs/Attachment"}, "type": "array", "maxItems": 500},
        "due": {"anyOf": [{"format": "date", "type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["title"],
    "title": "create_issueArguments",
    "type": "object",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_schema_is_bounded_into_an_accepted_grammar_or_refused_in_one_line(name):
    schema, refusal = HOSTILE[name]
    if refusal is None:
        grammar = check_call("plugin", "act", schema)
        assert check(grammar) > 0  # the port of llama.cpp's parser takes it
    else:
        with pytest.raises(GrammarError) as caught:
            check_call("plugin", "act", schema)
        message = str(caught.value)
        assert message.startswith("device plugin, call act: ") and refusal in message
        assert "\n" not in message and len(message) < 300


def test_the_speech_schema_that_crashed_is_refused_raw_and_accepted_bounded():
    """The measured fault: maxLength 2000 -> 2000 nested groups, over llama.cpp's limit."""
    from llmos.plugins.speech import device as speech

    schema = speech.calls["speak"].parameters
    assert schema["properties"]["text"]["maxLength"] == 2000
    with pytest.raises(GbnfError, match="exceeds llama.cpp's limit of 2000"):
        check(raw_grammar(schema))
    bounded = bounded_schema(schema)
    assert bounded["properties"]["text"]["maxLength"] == MAX_STRING_LENGTH
    check(to_gbnf(bounded))
    # the real limit is still the call's own schema's, checked after generation
    jsonschema.validate({"text": "x" * 1500}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"text": "x" * 2001}, schema)


def test_bounds_follow_the_repetition_limit_exactly():
    """The port counts as llama.cpp does: a string of 1000 fits (2000 rules), 1001 does not."""
    check(raw_grammar(obj(t={"type": "string", "maxLength": 1000})))
    with pytest.raises(GbnfError, match=r"\(2001\)"):
        check(raw_grammar(obj(t={"type": "string", "maxLength": 1001})))


def test_what_the_grammar_loosens_is_still_checked_by_validation():
    cases = {
        "enum of 5000": ({"choice": "option 4999"}, {"choice": "option 5000"}),
        "maxItems 10000": ({"items": ["a"] * 5000}, None),
        "lookahead pattern": ({"code": "abc"}, {"code": "1bc"}),
        "unknown keywords": ({"n": 14}, {"n": 15}),
    }
    for name, (valid, invalid) in cases.items():
        schema = HOSTILE[name][0]
        bounded = bounded_schema(schema)
        jsonschema.Draft202012Validator.check_schema(bounded)
        jsonschema.validate(valid, schema)
        if invalid is not None:
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(invalid, schema)
    assert bounded_schema(HOSTILE["enum of 5000"][0])["properties"]["choice"] == {
        "type": "string", "maxLength": MAX_STRING_LENGTH}
    assert bounded_schema(HOSTILE["maxItems 10000"][0])["properties"]["items"]["maxItems"] == MAX_ITEMS
    assert "pattern" not in bounded_schema(HOSTILE["lookahead pattern"][0])["properties"]["code"]


def test_a_pattern_llama_cpp_takes_is_kept_and_an_enum_within_the_limit_too():
    bounded = bounded_schema(obj(code={"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"},
                                 size={"enum": [f"s{i}" for i in range(MAX_ENUM)]}))
    assert bounded["properties"]["code"]["pattern"] == "^[A-Z]{2}-[0-9]+$"
    assert len(bounded["properties"]["size"]["enum"]) == MAX_ENUM


def test_an_mcp_tool_schema_is_bounded_with_refs_inlined():
    bounded = bounded_schema(MCP_TOOL)
    check(to_gbnf(bounded))
    assert "$ref" not in json.dumps(bounded) and "$defs" not in bounded
    props = bounded["properties"]
    assert props["priority"] == {"enum": ["low", "normal", "high"]}
    assert props["title"]["maxLength"] == MAX_STRING_LENGTH
    assert props["attachments"]["maxItems"] == MAX_ITEMS
    assert props["attachments"]["items"]["properties"]["url"]["maxLength"] == MAX_STRING_LENGTH
    assert bounded["additionalProperties"] is False


def test_an_anyof_of_required_variants_keeps_its_object():
    """The converter reads only the branches; each branch gets the object beside it."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
              "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}
    with pytest.raises(AssertionError):
        raw_grammar(schema)  # llama-cpp-python alone cannot convert it
    bounded = bounded_schema(schema)
    check(to_gbnf(bounded))
    assert [b["required"] for b in bounded["anyOf"]] == [["a"], ["b"]]
    assert all(set(b["properties"]) == {"a", "b"} for b in bounded["anyOf"])


def test_every_built_in_call_has_a_grammar():
    registry = DeviceRegistry.from_entry_points()
    assert registry.broken == [] and registry.refused == {}
    calls = registry.calls()
    assert len(calls) >= 10
    for name, call in calls:
        device, _, call_name = name.partition(".")
        bounded = bounded_schema(call.parameters)
        jsonschema.Draft202012Validator.check_schema(bounded)
        assert check(check_call(device, call_name, call.parameters)) > 0, name
        for example in call.examples:  # what the device shows the model still fits its grammar
            jsonschema.validate(example.arguments, bounded)


@pytest.mark.parametrize("grammar, reason", [
    ('root ::= "a\\q"', "unknown escape"),
    ('root ::= item', "undefined rule"),
    ('root ::= root "a" | "b"', "left recursion"),
    ('root ::= ("a" | x)\nx ::= "" root', "left recursion"),
    ('item ::= "a"', "no 'root' rule"),
    ('root ::= "a"{5,3}', "maximum below"),
    ('root ::= "a"{2001}', "sane defaults"),
    ('root ::= ("a" "b"', "expecting ')'"),
    ('root ::= "a" <[12]>', "vocabulary"),
    ('root ::= [a-', "unexpected end"),
])
def test_the_parser_port_refuses_what_llama_cpp_refuses(grammar, reason):
    with pytest.raises(GbnfError, match=re.escape(reason)):
        check(grammar)


def test_the_parser_port_accepts_gbnf_as_written_by_hand():
    check('root ::= greeting (" " name)* "!"\n# a comment\ngreeting ::= "hi" | "hello"\n'
          'name ::= [A-Z] [a-z]{1,20} | "\\u00e9" [^\\n\\]]+\n')
    check('root ::= ("a" | "b")+ x?\nx ::= "" | "c" x')  # right recursion through an empty rule


def refusing_device() -> Device:
    device = Device("shouter", description="Shouts words.")

    @device.call()
    def shout(text: Annotated[str, {"minLength": 5000}]) -> str:
        """Shout a long text.

        Args:
            text: What to shout.
        """
        return text.upper()

    @device.call()
    def whisper(text: Annotated[str, {"maxLength": 3000}]) -> str:
        """Whisper a text.

        Args:
            text: What to whisper.
        """
        return text.lower()

    return device


def test_a_refused_call_leaves_the_prompt_and_the_other_calls_work():
    registry = DeviceRegistry.from_entry_points()
    registry.register(refusing_device())
    assert list(registry.refused) == ["shouter.shout"]
    assert str(registry.refused["shouter.shout"]).startswith("device shouter, call shout: ")
    names = [name for name, _ in registry.calls()]
    assert "shouter.whisper" in names and "shouter.shout" not in names
    assert "shout" not in boot_messages(registry)[0].content.replace("shouter", "")
    with pytest.raises(UnknownCall, match="refused"):
        registry.resolve("shouter.shout")
    registry.resolve("shouter.whisper")


class _RefusingEngine(ScriptedBackend):
    """An engine whose grammar compile refuses one call (as llama.cpp would), and the same
    refusal when a grammar is opened."""

    def __init__(self, *replies: str, refuse: str = "whisper") -> None:
        super().__init__(list(replies))
        self.refuse = refuse
        self.compiled: list[str] = []

    def compile_grammar(self, grammar: str) -> None:
        self.compiled.append(grammar)
        if self.refuse and f"{self.refuse}" in grammar:
            raise GrammarError("llama.cpp refused its grammar")

    def open(self, pid, prompt, params, json_schema=None):
        if json_schema is not None and self.refuse and self.refuse in json.dumps(json_schema):
            self.replies.popleft()  # the model's turn to write the arguments is over
            raise GrammarError("llama.cpp refused its grammar")
        return super().open(pid, prompt, params, json_schema)


def quiet_device() -> Device:
    device = Device("quiet", description="Says things quietly.")

    @device.call()
    def whisper(whisper: str) -> str:
        """Whisper a text.

        Args:
            whisper: What to whisper.
        """
        return whisper.lower()

    return device


def test_a_call_the_engine_refuses_at_load_leaves_the_prompt_before_the_kernel_is_ready():
    registry = DeviceRegistry.from_entry_points()
    registry.register(quiet_device())
    backend = _RefusingEngine("ANSWER: fine.")
    kernel = Kernel(backend, registry, TurnOptions()).start()
    try:
        kernel.wait_ready(10)
        assert len(backend.compiled) == len(registry.calls()) + 1  # every call, once
        assert "quiet.whisper" in registry.refused
        assert "quiet.whisper" not in kernel._boot[0].content
        assert kernel.ask("hello").result(10).answer == "fine."
    finally:
        kernel.shutdown()


def test_a_grammar_refused_at_generation_is_the_calls_error_and_the_kernel_goes_on():
    registry = DeviceRegistry.from_entry_points()
    registry.register(quiet_device())
    backend = _RefusingEngine('CALL quiet.whisper {"whisper": "HI"}', "ANSWER: it did not work.",
                              "ANSWER: still here.", refuse="")
    kernel = Kernel(backend, registry, TurnOptions()).start()
    try:
        kernel.wait_ready(10)
        backend.refuse = "whisper"  # the engine refuses it only now, when the arguments are generated
        result = kernel.ask("whisper hi").result(10)
        assert result.answer == "it did not work."
        [call] = result.syscalls
        assert call["ok"] is False and "device quiet, call whisper: llama.cpp refused" in call["error"]
        assert kernel.ask("and now?").result(10).answer == "still here."
    finally:
        kernel.shutdown()


HOSTILE_PLUGIN = '''
from typing import Annotated
from llmos.kernel.devices import Device

device = Device("hostile", description="A plugin with a schema llama.cpp cannot take.")

@device.call()
def shout(text: Annotated[str, {"maxLength": 100000, "minLength": 9000}]) -> str:
    """Shout.

    Args:
        text: What to shout.
    """
    return text

@device.call()
def echo(text: str) -> str:
    """Echo.

    Args:
        text: What to echo.
    """
    return text
'''


def install_plugin(folder: Path) -> dict[str, str]:
    """A real entry-point plugin on PYTHONPATH (a module and its dist-info)."""
    (folder / "hostile_plugin.py").write_text(textwrap.dedent(HOSTILE_PLUGIN))
    info = folder / "hostile_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[llmos.devices]\nhostile = hostile_plugin:device\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env.get("PYTHONPATH", "")])
    return env


def test_a_plugin_with_a_hostile_schema_is_listed_as_refused_and_the_process_lives(tmp_path):
    env = install_plugin(tmp_path)
    out = subprocess.run([sys.executable, "-m", "llmos.app.cli", "--data-dir", str(tmp_path / "data"), "devices"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    refused = [line for line in out.stdout.splitlines() if line.startswith("! refused")]
    assert len(refused) == 1 and refused[0].startswith("! refused device hostile, call shout: ")
    assert "calculator" in out.stdout and "echo(text: string)" in out.stdout
