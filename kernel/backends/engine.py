"""Which llama.cpp engine path runs on this CPU: checked in a subprocess, chosen once, remembered.

A llama.cpp build that is fast on one CPU can crash on another: the AMX weight repacking of
recent Xeons segfaults on the first decode, a virtualised host may advertise an instruction set it
does not enable, and a native build carried to another CPU dies of an illegal instruction. A
native crash takes the whole OS down, so before the kernel loads a model in-process the engine
is proven on it in a subprocess (:mod:`.engine_smoke`: load, decode a fixed prompt greedily,
compare the tokens) and the first path that passes is used. The paths, fastest first:

- ``native``: the build in the venv (``-march=native`` without AMX, ``tools/build_engine.py``),
  with llama.cpp's extra buffer types (weights repacked for this CPU's SIMD);
- ``native-no-repack``: the same build with ``use_extra_bufts`` off (the repack and AMX buffers
  are where CPU-specific crashes live);
- ``portable``: a baseline x86-64 build (no AVX), loaded through ``LLAMA_CPP_LIB_PATH``.

The choice is kept in ``<engines dir>/choices.json`` under a key of the llama.cpp libraries,
the model file and the CPU, so it is checked again when any of them changes.
``LLMOS_ENGINE=<path>`` forces a path without the check. A path other
than the first is announced in one line. ``llmos doctor`` shows it; ``make bench`` compares the
chosen path's speed with the portable one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

log = logging.getLogger(__name__)

# Greedy continuation of engine_smoke.PROMPT ("1, 2, ..., 8,") by the embedded default model
# (Qwen2.5-Coder-0.5B Q4_K_M): " 9, 10, 11, 12, ", one digit a token, on every path alike.
DEFAULT_MODEL_REFERENCE: tuple[int, ...] = (220, 24, 11, 220, 16, 15, 11, 220, 16, 16, 11, 220, 16, 17, 11, 220)
SMOKE_TIMEOUT_S = 300.0
PATH_NAMES = ("native", "native-no-repack", "portable")
DESCRIPTIONS = {
    "native": "the build for this CPU, weights repacked for its SIMD",
    "native-no-repack": "the build for this CPU, without repacked weights (no AMX or repack buffers)",
    "portable": "the baseline x86-64 build (slowest, runs on any x86-64 CPU)",
}


class EngineError(RuntimeError):
    """No engine path runs here, or the one chosen cannot be used in this process. One line."""


@dataclass(frozen=True)
class EnginePath:
    name: str
    lib_dir: Path | None  # None: llama-cpp-python's own libraries
    extra_bufts: bool

    @property
    def description(self) -> str:
        return DESCRIPTIONS.get(self.name, self.name)


@dataclass
class SmokeResult:
    path: str
    ok: bool
    tokens: list[int] = field(default_factory=list)
    tokens_per_s: float | None = None
    error: str = ""
    prefill_tokens_per_s: float | None = None
    matches: bool | None = None  # tokens equal the reference (None: no reference)


@dataclass
class EngineChoice:
    path: str | None
    key: str
    model: str
    results: list[SmokeResult]
    reference: str  # where the expected tokens came from

    @property
    def tokens_per_s(self) -> float | None:
        return next((r.tokens_per_s for r in self.results if r.path == self.path), None)

    def summary(self) -> str:
        if self.path is None:
            return "no engine path passed: " + "; ".join(f"{r.path}: {r.error or 'wrong tokens'}" for r in self.results)
        failed = [r for r in self.results if r.path != self.path and PATH_NAMES.index(r.path) < PATH_NAMES.index(self.path)]
        why = "; ".join(f"{r.path} {r.error or 'computed different tokens'}" for r in failed)
        return f"{self.path} ({DESCRIPTIONS[self.path]})" + (f", because {why}" if why else "")


# --- where things are ------------------------------------------------------------------------


def engines_dir() -> Path:
    env = os.environ.get("LLMOS_ENGINES_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("llmos")) / "engines"


def choices_path() -> Path:
    env = os.environ.get("LLMOS_ENGINE_CHOICES")
    return Path(env) if env else engines_dir() / "choices.json"


def _installed_lib_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "lib"


def portable_lib_dir() -> Path | None:
    """The newest complete portable build for the installed llama-cpp-python version."""
    version = _llama_cpp_version()
    found = sorted(engines_dir().glob(f"portable-{version}-*/lib/.complete"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def _llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return "none"


def available_paths() -> list[EnginePath]:
    paths = [EnginePath("native", None, True), EnginePath("native-no-repack", None, False)]
    portable = portable_lib_dir()
    if portable is not None:
        paths.append(EnginePath("portable", portable, False))
    return paths


def path_named(name: str) -> EnginePath:
    for path in available_paths():
        if path.name == name:
            return path
    raise EngineError(f"the {name} engine is not installed (run `make setup`)")


# --- what the choice depends on ----------------------------------------------------------------


def cpu_signature() -> str:
    model, flags = platform.processor(), ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
                break
    return f"{platform.machine()}|{model}|{flags}"


def cpu_features() -> list[str]:
    """The instruction sets llama.cpp's CPU paths care about, as /proc/cpuinfo names them."""
    flags = set(cpu_signature().rsplit("|", 1)[-1].split())
    wanted = ("sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")
    return [f for f in wanted if f in flags]


def _file_id(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"


def choice_key(model: Path) -> str:
    libs = []
    for lib_dir in (_installed_lib_dir(), portable_lib_dir()):
        if lib_dir is not None:
            libs += [_file_id(p) for p in sorted(lib_dir.glob("lib*.so*"))]
    parts = [cpu_signature(), _file_id(Path(model).resolve()), *libs]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


# --- the check --------------------------------------------------------------------------------


def _signal_name(code: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(-code).name
    return f"signal {-code}"


def smoke(path: EnginePath, model: Path, timeout: float = SMOKE_TIMEOUT_S, *, n_tokens: int | None = None,
          prompt_numbers: int | None = None) -> SmokeResult:
    """Run the smoke decode on ``path`` in a subprocess; a crash is a result, not an exception.

    ``n_tokens`` and ``prompt_numbers`` (a longer prompt) are for the benchmark."""
    env = dict(os.environ)
    if path.lib_dir is not None:
        env["LLAMA_CPP_LIB_PATH"] = env["MTMD_CPP_LIB"] = str(path.lib_dir)
    cmd = [sys.executable, "-m", "llmos.kernel.backends.engine_smoke", path.name, str(model),
           "1" if path.extra_bufts else "0"]
    if n_tokens is not None:
        cmd += [str(n_tokens)] + ([str(prompt_numbers)] if prompt_numbers else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return SmokeResult(path.name, False, error=f"hung (no answer in {timeout:.0f} s)")
    if proc.returncode < 0:
        return SmokeResult(path.name, False, error=f"crashed ({_signal_name(proc.returncode)})")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return SmokeResult(path.name, False, error=f"failed (exit {proc.returncode}: {tail[:200]})")
    data = json.loads(lines[-1])
    if not data.get("finite", False):
        return SmokeResult(path.name, False, data["tokens"], data.get("tokens_per_s"), error="computed NaN or infinite logits")
    return SmokeResult(path.name, True, data["tokens"], data.get("tokens_per_s"),
                       prefill_tokens_per_s=data.get("prefill_tokens_per_s"))


def _reference_for(model: Path) -> tuple[int, ...] | None:
    from ..model_file import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SIZE

    model = Path(model)
    with contextlib.suppress(OSError):
        if model.name == DEFAULT_MODEL_NAME and model.stat().st_size == DEFAULT_MODEL_SIZE and DEFAULT_MODEL_REFERENCE:
            return DEFAULT_MODEL_REFERENCE
    return None


def check(model: Path, say: Callable[[str], None] | None = None) -> EngineChoice:
    """Prove the engine paths on ``model``, fastest first, and return the first that passes.

    The embedded model's greedy tokens are known; for any other GGUF the safest installed path
    computes the reference first, so "computes something different" is judged there too.
    """
    model = Path(model)
    paths = available_paths()
    results: dict[str, SmokeResult] = {}
    reference = _reference_for(model)
    source = "the embedded model's known tokens"
    if reference is None:
        safest = paths[-1]
        results[safest.name] = first = smoke(safest, model)
        reference = tuple(first.tokens) if first.ok else None
        source = f"the {safest.name} path" if first.ok else "none (the safest path failed)"
    chosen: str | None = None
    for path in paths:
        result = results.get(path.name) or smoke(path, model)
        result.matches = None if reference is None else tuple(result.tokens) == reference
        results[path.name] = result
        if result.ok and result.matches is not False:
            chosen = path.name
            break
    ordered = [results[p.name] for p in paths if p.name in results]
    choice = EngineChoice(chosen, choice_key(model), str(model), ordered, source)
    if say is not None and chosen is not None and chosen != PATH_NAMES[0]:
        say(f"engine: using {choice.summary()}")  # no path at all: the caller's error says it
    return choice


def _load_choices(store: Path) -> dict[str, Any]:
    try:
        data = json.loads(store.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_choice(store: Path, choice: EngineChoice) -> None:
    data = _load_choices(store)
    data[choice.key] = asdict(choice)
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, store)


def _from_dict(data: dict[str, Any]) -> EngineChoice:
    results = [SmokeResult(**r) for r in data.get("results", [])]
    return EngineChoice(data.get("path"), data["key"], data.get("model", ""), results, data.get("reference", ""))


_LOCK = threading.Lock()


def cached_choice(model: Path, store: Path | None = None) -> EngineChoice | None:
    data = _load_choices(store or choices_path()).get(choice_key(Path(model)))
    return _from_dict(data) if data else None


def choose(model: Path, *, store: Path | None = None, recheck: bool = False,
           say: Callable[[str], None] | None = None,
           progress: Callable[[str], None] | None = None) -> EngineChoice:
    """The remembered choice for ``model`` on this CPU and these libraries, checked when new.

    ``say`` hears a fallback (one line); ``progress`` hears that a check starts (default: the log,
    so that a file llama.cpp refuses ends in the caller's one-line error and nothing more)."""
    forced = os.environ.get("LLMOS_ENGINE", "").strip()
    if forced:  # the user's word: no check
        if forced not in PATH_NAMES:
            raise EngineError(f"LLMOS_ENGINE={forced} is not an engine path (one of {', '.join(PATH_NAMES)})")
        return EngineChoice(forced, choice_key(Path(model)), str(model), [], "LLMOS_ENGINE")
    store = store or choices_path()
    with _LOCK:
        if not recheck and (cached := cached_choice(model, store)) is not None and cached.path is not None:
            return cached
        (progress or log.info)(f"engine: checking llama.cpp on this CPU with {Path(model).name} (once) ...")
        choice = check(model, say)
        if choice.path is not None:
            _save_choice(store, choice)
        return choice


# --- using the choice in this process -------------------------------------------------------------


def loaded_lib_dir() -> Path | None:
    """Where this process's llama_cpp loaded its libraries from (None: not imported yet)."""
    module = sys.modules.get("llama_cpp.llama_cpp")
    base = getattr(module, "_base_path", None)
    return Path(base).resolve() if base is not None else None


def activate(path: EnginePath) -> None:
    """Make this process's llama_cpp use ``path``'s libraries: before the import, or already so."""
    wanted = (path.lib_dir or _installed_lib_dir() or Path()).resolve()
    loaded = loaded_lib_dir()
    if loaded is None:
        if path.lib_dir is not None:
            os.environ["LLAMA_CPP_LIB_PATH"] = os.environ["MTMD_CPP_LIB"] = str(path.lib_dir)
        else:
            os.environ.pop("LLAMA_CPP_LIB_PATH", None)
            os.environ.pop("MTMD_CPP_LIB", None)
        return
    if loaded != wanted:
        raise EngineError(
            f"this model needs the {path.name} engine, but this process already runs llama.cpp from {loaded}: "
            "restart llmos"
        )


def prepare_process(model: Path | None) -> EngineChoice | None:
    """Activate the remembered choice for ``model`` before anything imports llama_cpp (no check:
    the backend checks when it loads). Front ends call it first, so that a grammar compiled or a
    tokenizer opened before the model loads uses the same libraries as the model will."""
    if model is None or _installed_lib_dir() is None:
        return None
    with contextlib.suppress(EngineError, OSError):
        choice = cached_choice(Path(model))
        if choice is not None and choice.path is not None:
            activate(path_named(choice.path))
            return choice
    return None


_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _model_params(extra_bufts: bool) -> Iterator[None]:
    """llama-cpp-python's ``Llama`` has no ``use_extra_bufts`` argument: set it on the defaults it reads."""
    import llama_cpp.llama_cpp as lc

    with _PARAMS_LOCK:
        original = lc.llama_model_default_params

        def params() -> Any:
            p = original()
            p.use_extra_bufts = extra_bufts
            return p

        lc.llama_model_default_params = params
        try:
            yield
        finally:
            lc.llama_model_default_params = original


def load_llama(model: str | Path, *, extra_bufts: bool, **kwargs: Any) -> Any:
    """``llama_cpp.Llama`` on ``model`` with the extra buffer types on or off."""
    import llama_cpp

    kwargs.setdefault("verbose", False)
    with _model_params(extra_bufts):
        return llama_cpp.Llama(model_path=str(model), **kwargs)
