"""The grammars compiled by llama.cpp itself, on the real model; and the measured fault (a device
schema killing `llmos ask` with exit 139) gone, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.gbnf import GbnfError, check
from llmos.kernel.syscalls.grammar import GrammarError, bounded_schema, check_call, to_gbnf
from tests.kernel.test_grammar import HOSTILE, MCP_TOOL, install_plugin, raw_grammar

pytestmark = pytest.mark.model


def compiles(backend, grammar: str) -> bool:
    try:
        backend.compile_grammar(grammar)
    except GrammarError:
        return False
    return True


def test_every_built_in_call_compiles_in_llama_cpp(real_backend):
    registry = DeviceRegistry.from_entry_points()
    names = [name for name, _ in registry.calls()]
    assert len(names) >= 10
    for name, call in registry.calls():
        device, _, call_name = name.partition(".")
        real_backend.compile_grammar(check_call(device, call_name, call.parameters))
    assert registry.verify_grammars(real_backend.compile_grammar) == []
    assert [name for name, _ in registry.calls()] == names


def corpus() -> dict[str, str]:
    """Grammars the port judges: raw (as llama-cpp-python would send them) and bounded."""
    grammars: dict[str, str] = {}
    for name, (schema, _) in {**HOSTILE, "mcp tool": (MCP_TOOL, None)}.items():
        try:
            grammars[f"{name} (raw)"] = raw_grammar(schema)
        except Exception:  # the converter itself fails: nothing reaches llama.cpp
            pass
        try:
            grammars[f"{name} (bounded)"] = to_gbnf(bounded_schema(schema))
        except GrammarError:
            pass
    for n in (999, 1000, 1001, 1500):
        grammars[f"string of {n}"] = raw_grammar({"type": "string", "maxLength": n})
    grammars.update({
        "unknown escape": 'root ::= "a\\q"', "undefined rule": "root ::= item",
        "left recursion": 'root ::= root "a" | "b"', "no root": 'item ::= "a"',
        "2001 repetitions": 'root ::= "a"{2001}', "unclosed group": 'root ::= ("a" "b"',
        "hand-written": 'root ::= greeting (" " name)* "!"\ngreeting ::= "hi" | "hello"\nname ::= [A-Z] [a-z]{1,20}',
    })
    return grammars


def test_the_parser_port_agrees_with_llama_cpp(real_backend):
    verdicts = {}
    for name, grammar in corpus().items():
        try:
            check(grammar)
            port = True
        except GbnfError as exc:
            if "nested more than" in str(exc):  # llama.cpp would overflow its stack: never sent
                continue
            port = False
        verdicts[name] = (port, compiles(real_backend, grammar))
    disagree = {name: v for name, v in verdicts.items() if v[0] != v[1]}
    assert disagree == {}
    assert sum(1 for port, _ in verdicts.values() if not port) >= 8  # refusals were compared too
    assert verdicts["string of 1000"] == (True, True) and verdicts["string of 1001"] == (False, False)


def test_dinner_is_ready_is_spoken_and_a_hostile_plugin_is_refused(tmp_path):
    """The issue's command, on the real model, with a plugin whose schema llama.cpp cannot take."""
    wav = tmp_path / "said.wav"
    config = tmp_path / "config.toml"
    config.write_text(f'[devices.speech]\noutput = "{wav}"\n')
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    env = install_plugin(plugins)
    env["LLMOS_CONFIG"] = str(config)
    done = subprocess.run(
        [sys.executable, "-m", "llmos.app.cli", "--data-dir", str(tmp_path / "data"), "--yes",
         "ask", "--json", "Say 'dinner is ready' out loud."],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    refused = [line for line in done.stderr.splitlines() if "refused device hostile, call shout:" in line]
    assert len(refused) == 1, done.stderr[-2000:]
    result = json.loads(done.stdout)
    spoken = [c for c in result["syscalls"] if c["device"] == "speech" and c["call"] == "speak"]
    assert spoken and spoken[0]["ok"], result["syscalls"]
    assert "dinner" in spoken[0]["arguments"]["text"].lower()
    assert wav.is_file() and wav.stat().st_size > 1000
