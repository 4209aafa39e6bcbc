"""`llmos doctor`, run as a user runs it (a real subprocess), on a healthy set-up and on broken ones.

Each broken set-up is a real fault: a model part removed or truncated (a models folder of links
to the installed parts, through LLMOS_MODELS_DIR), a journal that is not SQLite, a data directory
under a regular file (the tests run as root, so permissions alone would not stop a write), an
unknown config key, an MCP server whose command does not exist. Each must fail exactly the check
it breaks, name it, and give a fix; the rest of the report stays healthy.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.kernel.model_file import DEFAULT_MODEL_NAME, models_dir

GROUPS = {"config", "models", "engine", "voice", "display", "data"}
CLOCK_SERVER = (
    "[mcp.servers.clock]\n"
    f"command = {json.dumps(sys.executable)}\n"
    'args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]\n'
    "permissions = []\n"
)


def doctor(tmp_path: Path, *args: str, config: str = "", data_dir: Path | None = None,
           env: dict[str, str] | None = None, json_out: bool = True) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "config.toml"
    config_file.write_text(config)
    run_env = {**os.environ, "LLMOS_CONFIG": str(config_file), **(env or {})}
    command = [sys.executable, "-m", "llmos.app.cli", "--data-dir", str(data_dir or tmp_path / "data"),
               "doctor", *(["--json"] if json_out else []), *args]
    return subprocess.run(command, capture_output=True, text=True, env=run_env, timeout=600)


def report(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    assert "Traceback" not in done.stderr, done.stderr
    checks = json.loads(done.stdout)["checks"]
    assert len({c["name"] for c in checks}) == len(checks), "check names are unique"
    return {c["name"]: c for c in checks}


def failed(checks: dict[str, dict[str, str]]) -> set[str]:
    return {name for name, c in checks.items() if c["status"] == "fail"}


def linked_models(tmp_path: Path) -> Path:
    """A models folder of links to every installed model file (the GGUF, whisper, the static table)."""
    source, target = models_dir(), tmp_path / "models"
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    assert (target / DEFAULT_MODEL_NAME).exists(), f"the embedded model is not installed in {source}"
    return target


@pytest.mark.model
def test_healthy_set_up_passes_every_check(tmp_path: Path):
    data = tmp_path / "data"
    notes = tmp_path / "notes.txt"
    notes.write_text("The doctor checks the memory store opens.\n\nA second paragraph.\n")
    added = subprocess.run([sys.executable, "-m", "llmos.app.cli", "--data-dir", str(data), "memory", "add",
                            str(notes)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "LLMOS_CONFIG": str(tmp_path / "config.toml")})
    assert added.returncode == 0, added.stderr
    done = doctor(tmp_path, config=CLOCK_SERVER, data_dir=data)
    checks = report(done)
    assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True, done.stdout
    assert failed(checks) == set()
    assert {c["group"] for c in checks.values()} == GROUPS
    assert checks["engine"]["status"] == "ok" and " tokens/s on " in checks["engine"]["detail"]
    assert "sha256 verified" in checks["model"]["detail"]
    assert "get_current_time" in checks["mcp clock"]["detail"]
    assert checks["journal"]["detail"].endswith("integrity check ok")
    assert re.fullmatch(r"opens: 0 memories, [1-9]\d* document chunks", checks["memory store"]["detail"])
    for name in ("whisper tiny.en", "whisper base", "embedder minilm", "static table", "espeak-ng", "qt", "data dir"):
        assert checks[name]["status"] == "ok", checks[name]
    # what a headless machine lacks is a warning, said as such, never a failure
    for name in ("audio input", "audio output", "display"):
        assert checks[name]["status"] in ("ok", "warn")
        if checks[name]["status"] == "warn":
            assert "unavailable" in checks[name]["detail"] or "cannot" in checks[name]["detail"] \
                or "not shown" in checks[name]["detail"]


@pytest.mark.model
@pytest.mark.parametrize("part, check", [("whisper/base.pt", "whisper base"), (DEFAULT_MODEL_NAME, "model")])
def test_a_missing_or_truncated_model_part_fails_its_check(tmp_path: Path, part: str, check: str):
    models = linked_models(tmp_path)
    (models / part).unlink()
    if part == DEFAULT_MODEL_NAME:  # truncated: the first MiB of the real file
        with (models_dir() / part).open("rb") as fh:
            (models / part).write_bytes(fh.read(1 << 20))
    done = doctor(tmp_path, env={"LLMOS_MODELS_DIR": str(models)})
    checks = report(done)
    assert done.returncode == 1
    assert failed(checks) == {check}
    assert "make setup" in checks[check]["fix"]
    if check == "model":
        assert "truncated" in checks["model"]["detail"]
        assert checks["engine"]["status"] == "warn" and "not checked" in checks["engine"]["detail"]
    else:
        assert "missing" in checks[check]["detail"]


def test_a_corrupt_journal_fails_the_integrity_check(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "journal.sqlite3").write_bytes(b"not a database, " * 512)
    done = doctor(tmp_path, data_dir=data, env={"LLMOS_BACKEND": "openai"})
    checks = report(done)
    assert done.returncode == 1
    assert failed(checks) == {"journal"}
    assert str(data / "journal.sqlite3") in checks["journal"]["detail"]
    assert "mv " in checks["journal"]["fix"]


def test_an_unwritable_data_directory_fails(tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data directory's parent should be")
    done = doctor(tmp_path, data_dir=blocker / "data", env={"LLMOS_BACKEND": "openai"})
    checks = report(done)
    assert done.returncode == 1
    assert failed(checks) == {"data dir"}
    assert "not writable" in checks["data dir"]["detail"] and "--data-dir" in checks["data dir"]["fix"]
    assert checks["journal"]["status"] == "warn"  # not checked: nowhere to look


def test_a_bad_config_key_fails_with_a_fix_in_the_text_report(tmp_path: Path):
    done = doctor(tmp_path, config="no_such_key = 1\n", env={"LLMOS_BACKEND": "openai"}, json_out=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("fail config:"))
    assert "no_such_key" in lines[fail]
    assert lines[fail + 1].strip().startswith("fix: edit ") and "config.toml" in lines[fail + 1]
    assert [line for line in lines if line.startswith("fail ")] == [lines[fail]]
    assert lines[-1].endswith("1 failed: something llmos needs is broken")


def test_a_dead_mcp_server_fails_and_a_live_one_passes(tmp_path: Path):
    config = CLOCK_SERVER + '[mcp.servers.dead]\ncommand = "/nonexistent/llmos-dead-server"\n'
    done = doctor(tmp_path, config=config, env={"LLMOS_BACKEND": "openai"})
    checks = report(done)
    assert done.returncode == 1
    assert failed(checks) == {"mcp dead"}
    assert "/nonexistent/llmos-dead-server" in checks["mcp dead"]["detail"]
    assert "[mcp.servers.dead]" in checks["mcp dead"]["fix"]
    assert checks["mcp clock"]["status"] == "ok"


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def test_model_option_reports_a_gguf_without_template_or_context(tmp_path: Path):
    """A GGUF with a header and a name but no tensors' data: llama.cpp refuses it in the subprocess."""
    fake = tmp_path / "headless.gguf"
    fake.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 2)
                     + _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama")
                     + _gguf_string("general.name") + struct.pack("<I", 8) + _gguf_string("headless"))
    done = doctor(tmp_path, "--model", str(fake), env={"LLMOS_BACKEND": "openai"})
    checks = report(done)
    assert done.returncode == 1
    assert failed(checks) == {"headless.gguf chat template", "headless.gguf context", "headless.gguf decode"}
    assert checks["headless.gguf"]["status"] == "ok" and "llama headless" in checks["headless.gguf"]["detail"]
    assert checks["headless.gguf chat template"]["detail"] == "no chat template in the file"


@pytest.mark.model
def test_model_option_loads_and_decodes_another_gguf(tmp_path: Path, model_path: Path):
    other = tmp_path / "other.gguf"
    other.symlink_to(model_path)
    done = doctor(tmp_path, "--model", str(other), env={"LLMOS_BACKEND": "openai"})
    checks = report(done)
    assert done.returncode == 0, done.stdout
    assert checks["other.gguf chat template"]["detail"].startswith("ChatML")
    assert checks["other.gguf context"]["detail"] == "trained for 32768 tokens"
    assert " tokens/s" in checks["other.gguf decode"]["detail"]


@pytest.mark.model
def test_an_engine_path_that_crashes_fails_and_recheck_moves_off_it(tmp_path: Path, model_path: Path):
    """The remembered path crashes for real (LLMOS_ENGINE_FAULT: a segfault in the smoke subprocess)."""
    from llmos.kernel.backends import engine

    cached = engine.cached_choice(model_path)
    assert cached is not None and cached.path, "`make` proves an engine path and remembers it"
    store = tmp_path / "choices.json"  # a copy: the user's remembered choice is never changed
    store.write_bytes(engine.choices_path().read_bytes())
    env = {"LLMOS_ENGINE_CHOICES": str(store), "LLMOS_ENGINE_FAULT": f"{cached.path}=crash"}
    checks = report(done := doctor(tmp_path, env=env))
    assert done.returncode == 1 and failed(checks) == {"engine"}
    assert checks["engine"]["detail"] == f"the smoke decode on {cached.path} crashed (SIGSEGV)"
    assert "llmos doctor --recheck" in checks["engine"]["fix"]
    checks = report(done := doctor(tmp_path, "--recheck", env=env))
    if cached.path == engine.PATH_NAMES[-1]:  # nothing after it to fall back to
        assert done.returncode == 1 and "no engine path passed" in checks["engine"]["detail"]
    else:
        assert done.returncode == 0, done.stdout
        chosen = checks["engine"]["detail"].split(",", 1)[0]
        assert chosen in engine.PATH_NAMES and chosen != cached.path
        assert f"{cached.path} crashed (SIGSEGV)" in checks["engine"]["detail"]
        assert engine.cached_choice(model_path, store).path == chosen  # remembered in the copy
