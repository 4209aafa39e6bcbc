"""The engine paths: the smoke check in a subprocess, the fallback when a path crashes or computes
something else, the remembered choice, and the runtime loading the path that was chosen.

Faults are forced with ``LLMOS_ENGINE_FAULT`` (a real segfault in the smoke subprocess, or a
different token), so the fallback is tested on any CPU, not only on one that breaks llama.cpp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.kernel.backends import engine

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.model


def _run(args: list[str], tmp_path: Path, fault: str = "", timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LLMOS_ENGINE_CHOICES=str(tmp_path / "choices.json"), LLMOS_ENGINE_FAULT=fault)
    env.pop("LLMOS_ENGINE", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False, cwd=ROOT)


def test_every_installed_path_decodes_the_embedded_model_as_expected(model_path):
    paths = engine.available_paths()
    assert [p.name for p in paths] == list(engine.PATH_NAMES), "make setup builds the portable engine too"
    results = [engine.smoke(p, model_path) for p in paths]
    for result in results:
        assert result.ok, f"{result.path}: {result.error}"
        assert tuple(result.tokens) == engine.DEFAULT_MODEL_REFERENCE, result.path
        assert result.tokens_per_s and result.tokens_per_s > 0


def test_setup_check_falls_back_when_the_fast_path_crashes(tmp_path):
    proc = _run(["tools/check_engine.py"], tmp_path, fault="native=crash")
    assert proc.returncode == 0, proc.stderr
    assert "using native-no-repack" in proc.stdout and "native crashed (SIGSEGV)" in proc.stdout
    saved = json.loads((tmp_path / "choices.json").read_text())
    [choice] = saved.values()
    assert choice["path"] == "native-no-repack"
    assert [r["path"] for r in choice["results"]] == ["native", "native-no-repack"]


def test_setup_check_falls_back_to_portable_when_the_native_build_computes_wrong_tokens(tmp_path):
    proc = _run(["tools/check_engine.py"], tmp_path, fault="native=wrong,native-no-repack=crash")
    assert proc.returncode == 0, proc.stderr
    assert "using portable" in proc.stdout
    assert "native computed different tokens" in proc.stdout and "native-no-repack crashed" in proc.stdout


def test_setup_check_fails_with_one_line_when_no_path_runs(tmp_path):
    proc = _run(["tools/check_engine.py"], tmp_path, fault="native=crash,native-no-repack=crash,portable=crash")
    assert proc.returncode == 1
    assert "llama.cpp does not run on this CPU" in proc.stderr and "llmos doctor" in proc.stderr
    assert not (tmp_path / "choices.json").exists(), "a failed check is not remembered"


def test_the_choice_is_remembered_and_checked_again_when_asked(tmp_path):
    first = _run(["tools/check_engine.py"], tmp_path, fault="native=crash")
    assert "using native-no-repack" in first.stdout
    # remembered: the same fault no longer matters, no check runs
    second = _run(["tools/check_engine.py"], tmp_path, fault="")
    assert "checking llama.cpp" not in second.stdout and "native-no-repack passed" in second.stdout
    third = _run(["tools/check_engine.py", "--recheck"], tmp_path, fault="")
    assert "checking llama.cpp" in third.stdout and "engine: native passed" in third.stdout


def test_the_key_changes_with_the_cpu_and_the_model(monkeypatch, model_path, tmp_path):
    key = engine.choice_key(model_path)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    assert engine.choice_key(other) != key
    monkeypatch.setattr(engine, "cpu_signature", lambda: "x86_64|another CPU|avx2 amx_int8")
    assert engine.choice_key(model_path) != key


_LOAD = """
import json, sys
from llmos.kernel.backends import engine
from llmos.kernel.backends.base import SamplingParams
from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions
backend = LlamaCppBackend(LlamaOptions(engine.Path(sys.argv[1]), n_ctx=512))
backend.load()
stream = backend.open(1, "1, 2, 3, 4,", SamplingParams(max_tokens=6, temperature=0.0))
text = "".join(stream.next(6))
print(json.dumps({"path": backend.engine_path, "lib": str(engine.loaded_lib_dir()), "text": text}))
"""


def test_the_runtime_loads_the_chosen_path_in_process(tmp_path, model_path):
    proc = _run(["-c", _LOAD, str(model_path)], tmp_path, fault="native=crash,native-no-repack=crash")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["path"] == "portable"
    assert out["lib"] == str(engine.portable_lib_dir().resolve())
    assert out["text"].lstrip().startswith("5")
    assert "engine: using portable" in proc.stderr


def test_a_forced_path_needs_no_check(tmp_path, model_path, monkeypatch):
    monkeypatch.setenv("LLMOS_ENGINE", "native-no-repack")
    monkeypatch.setenv("LLMOS_ENGINE_CHOICES", str(tmp_path / "choices.json"))
    assert engine.choose(model_path).path == "native-no-repack"
    assert not (tmp_path / "choices.json").exists()
    monkeypatch.setenv("LLMOS_ENGINE", "turbo")
    with pytest.raises(engine.EngineError, match="not an engine path"):
        engine.choose(model_path)
