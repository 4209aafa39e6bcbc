"""Global options (`--model`, `--yes`, `--data-dir`, ...) work before the command and after it,
for every command, nested ones included (llmos issue 11, item 6)."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.app import cli
from llmos.kernel.grants import grants_path

# A value for every global option that differs from its default (so a lost option shows).
VALUES = {"--model": "m.gguf", "--backend": "openai", "--base-url": "http://127.0.0.1:9/v1", "--api-key": "k",
          "--remote-model": "r", "--n-ctx": "1234", "--threads": "3", "--data-dir": "/tmp/d",
          "--config": "/tmp/c.toml", "--yes": None, "--verbose": None}


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    """Arguments that make ``parser`` parse: one plausible value per positional."""
    out: list[str] = []
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        if action.nargs in ("?", "*"):
            continue
        out.append(str(action.choices[0]) if action.choices else "1" if action.type is int else "x")
    return out


def _commands() -> list[tuple[list[str], list[str]]]:
    """(path, positionals) of every command and nested command of the real parser."""
    found: list[tuple[list[str], list[str]]] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, command in action.choices.items():
                    found.append(([*path, name], _positionals(command)))
                    walk(command, [*path, name])

    walk(cli.build_parser(), [])
    return found


COMMANDS = _commands()
IDS = [" ".join(path) for path, _ in COMMANDS]


def _own_option(path: list[str], flag: str) -> argparse.Action | None:
    """The command's own option named ``flag`` (e.g. `llmos doctor --model`), or None when the
    name is the global option there."""
    parser = cli.build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    action = parser._option_string_actions.get(flag)
    return action if action is not None and action.default is not argparse.SUPPRESS else None


def _option(flag: str) -> list[str]:
    return [flag] if VALUES[flag] is None else [flag, VALUES[flag]]


def parse(argv: list[str]) -> dict:
    return vars(cli.build_parser().parse_args(argv))


def test_the_table_covers_the_options_of_the_top_parser():
    top = {flag for action in cli.build_parser()._actions for flag in action.option_strings if flag.startswith("--")}
    assert top - {"--help"} == set(VALUES)
    # nested commands are found: a regression would silently drop them from the tests below
    assert {"memory add", "devices call", "devices grant", "ask", "chat"} <= set(IDS)


@pytest.mark.parametrize("flag", sorted(VALUES))
@pytest.mark.parametrize("path, positionals", COMMANDS, ids=IDS)
def test_a_global_option_after_the_command_parses_as_before_it(path, positionals, flag):
    before = parse([*_option(flag), *path, *positionals])
    after = parse([*path, *positionals, *_option(flag)])
    between = parse([*path, *_option(flag), *positionals])
    dest = flag.removeprefix("--").replace("-", "_")
    expected = True if VALUES[flag] is None else int(VALUES[flag]) if flag in ("--n-ctx", "--threads") else VALUES[flag]
    assert before[dest] == expected
    own = _own_option(path, flag)
    if own is not None:  # the command's own option of that name takes it after the command
        assert after[own.dest] == between[own.dest] == expected
        return
    assert after == before and between == before


def test_a_command_s_own_option_of_a_global_name_is_found():
    assert _own_option(["doctor"], "--model").dest == "doctor_model"  # `llmos doctor --model PATH`
    assert _own_option(["ask"], "--model") is None


@pytest.mark.parametrize("path, positionals", COMMANDS, ids=IDS)
def test_without_global_options_a_command_gets_the_defaults(path, positionals):
    args = parse([*path, *positionals])
    assert args["model"] is None and args["yes"] is False and args["data_dir"] is None and args["verbose"] is False


@pytest.mark.parametrize("path, positionals", COMMANDS, ids=IDS)
def test_the_value_after_the_command_wins(path, positionals):
    args = parse(["--model", "first.gguf", "--data-dir", "/a", *path, *positionals,
                  "--model", "second.gguf"])
    own = _own_option(path, "--model")
    assert args[own.dest if own else "model"] == "second.gguf"
    assert args["data_dir"] == "/a"  # given before only: kept


@pytest.mark.parametrize("path, positionals", COMMANDS, ids=IDS)
def test_the_help_of_every_command_lists_the_global_options(path, positionals):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args([*path, "--help"])
    assert done.value.code == 0
    text = out.getvalue()
    assert "global options" in text
    for flag in VALUES:
        assert flag in text, flag


def test_a_command_that_defines_a_global_option_keeps_its_own():
    parser = argparse.ArgumentParser()
    cli.add_global_options(parser)
    sub = parser.add_subparsers(dest="command")
    own = sub.add_parser("doctor")
    own.add_argument("--model", help="the model to check", default="mine.gguf")
    for command in cli._commands(parser):
        cli.add_global_options(command, top=False)  # no "conflicting option string" error
    assert vars(parser.parse_args(["doctor"]))["model"] == "mine.gguf"
    assert vars(parser.parse_args(["doctor", "--model", "x.gguf", "--yes"])).items() >= {"model": "x.gguf", "yes": True}.items()


def test_an_unknown_option_after_the_command_is_still_refused():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["ask", "hi", "--no-such-option"])
    assert done.value.code == 2 and "unrecognized arguments: --no-such-option" in err.getvalue()


def _llmos() -> str:
    return str(Path(sys.executable).with_name("llmos"))  # the console script, as a user runs it


def test_options_after_the_command_reach_the_command_in_a_real_run(tmp_path):
    done = subprocess.run([_llmos(), "devices", "grant", "calculator", "network", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "calculator: granted network" in done.stdout
    assert grants_path(tmp_path).is_file()  # written where the option after the command said


@pytest.mark.model
def test_ask_with_model_and_yes_after_the_command(model_path):
    done = subprocess.run([_llmos(), "ask", "--model", str(model_path), "--yes", "What is 12 * 3?"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "36" in done.stdout
