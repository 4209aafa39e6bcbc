"""Build llama.cpp (llama-cpp-python) for the CPU it will run on (run by `make`, before llmos installs).

Two builds, both cached under the engines folder (``$LLMOS_ENGINES_DIR`` or
``~/.local/share/llmos/engines``) and keyed by what they depend on, so a second `make` is instant
and a change of CPU, compiler or llama-cpp-python version builds again:

- **native**: ``-march=native`` for the fastest code on this CPU, *without AMX*. llama.cpp's AMX
  path repacks the weights into an AMX buffer and crashes in ``ggml_backend_amx_mul_mat`` on the
  first decode on Xeons that have it (upstream issue #20824); other projects dropped the AMX
  variant from their builds for the same reason. GCC lets an explicit ``-mno-amx-*`` win over the
  ISA that ``-march=native`` implies, so the AMX source compiles to nothing. The wheel is installed
  into the venv; pip's own wheel cache is bypassed, since it keys builds by the source alone and
  would hand a wheel built for one CPU to another.
- **portable**: baseline x86-64 (no AVX, no FMA): the engine's safe path, which runs on any x86-64
  CPU, virtualised hosts that advertise features they do not enable included. Only its shared
  libraries are kept; the runtime loads them through llama-cpp-python's ``LLAMA_CPP_LIB_PATH``
  when the native build fails the smoke check (``llmos.kernel.backends.engine``).

Usage: ``build_engine.py native`` (build if needed and install into this interpreter's env),
``build_engine.py portable`` (build the safe libraries if needed), ``build_engine.py key``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
X86 = platform.machine().lower() in ("x86_64", "amd64")
_X86_OFF = ["SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2", "AVX512", "AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16"]

FLAVOURS: dict[str, dict[str, str]] = {
    "native": {
        "CMAKE_ARGS": "-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF",
        "CFLAGS": NO_AMX if X86 else "",
        "CXXFLAGS": NO_AMX if X86 else "",
    },
    "portable": {
        "CMAKE_ARGS": " ".join(
            ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
            + ([f"-DGGML_{flag}=OFF" for flag in _X86_OFF] if X86 else [])
        ),
        "CFLAGS": "",
        "CXXFLAGS": "",
    },
}


def engines_dir() -> Path:
    env = os.environ.get("LLMOS_ENGINES_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llmos" / "engines"


def cpu_signature() -> str:
    """What a native build depends on: the CPU's model and instruction-set flags."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{flags}"


def _compiler() -> str:
    try:
        return subprocess.run(["cc", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def build_key(flavour: str) -> str:
    parts = [PACKAGE, VERSION, json.dumps(FLAVOURS[flavour], sort_keys=True), _compiler(),
             sys.version.split()[0]]
    if flavour == "native":
        parts.append(cpu_signature())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def flavour_dir(flavour: str) -> Path:
    return engines_dir() / f"{flavour}-{VERSION}-{build_key(flavour)}"


def _build_wheel(flavour: str, dest: Path) -> Path:
    """Build the llama-cpp-python wheel with the flavour's flags into ``dest`` (skipped when there)."""
    wheels = sorted(dest.glob("llama_cpp_python-*.whl"))
    if wheels:
        return wheels[0]
    env = dict(os.environ, **FLAVOURS[flavour])
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    print(f"engine: building llama.cpp ({flavour}) for this CPU: about 5 minutes on 2 cores, once", flush=True)
    with tempfile.TemporaryDirectory(prefix="llmos-engine-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir",
             "--no-binary", PACKAGE, "-w", tmp, f"{PACKAGE}=={VERSION}"],
            check=True, env=env,
        )
        built = sorted(Path(tmp).glob("llama_cpp_python-*.whl"))
        if not built:
            raise SystemExit(f"engine: pip built no {PACKAGE} wheel")
        dest.mkdir(parents=True, exist_ok=True)
        final = dest / built[0].name
        shutil.move(str(built[0]), final.with_suffix(".partial"))
        os.replace(final.with_suffix(".partial"), final)
    return final


def _installed_stamp() -> Path:
    return Path(sys.prefix) / ".llmos-engine"


def install_native() -> int:
    dest = flavour_dir("native")
    stamp = _installed_stamp()
    if stamp.is_file() and stamp.read_text().strip() == str(dest):
        print(f"engine: the native build for this CPU is installed ({dest.name})")
        return 0
    wheel = _build_wheel("native", dest)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True)
    stamp.write_text(f"{dest}\n")
    print(f"engine: installed the native build ({dest.name}, without AMX)")
    return 0


def portable_lib_dir() -> Path:
    return flavour_dir("portable") / "lib"


def install_portable() -> int:
    lib = portable_lib_dir()
    if (lib / ".complete").is_file():
        print(f"engine: the portable build is in place ({lib.parent.name})")
        return 0
    wheel = _build_wheel("portable", lib.parent / "wheel")
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if member.startswith("llama_cpp/lib/") and not member.endswith("/"):
                (tmp / Path(member).name).write_bytes(zf.read(member))
    (tmp / ".complete").write_text(f"{PACKAGE} {VERSION}\n")
    shutil.rmtree(lib, ignore_errors=True)
    os.replace(tmp, lib)
    shutil.rmtree(lib.parent / "wheel", ignore_errors=True)
    print(f"engine: built the portable (safe) engine into {lib}")
    return 0


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "native"
    if what == "native":
        return install_native()
    if what == "portable":
        return install_portable()
    if what == "key":
        print(json.dumps({f: str(flavour_dir(f)) for f in FLAVOURS}, indent=2))
        return 0
    print(__doc__.strip().splitlines()[-1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
