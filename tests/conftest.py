"""Shared fixtures. The real model is loaded once per test run (session scope)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Qt aborts the whole run when there is no display: tests always render offscreen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Never read the user's config or write into the user's data directory.
_DATA = tempfile.mkdtemp(prefix="llmos-test-data-")
os.environ["LLMOS_DATA_DIR"] = _DATA
os.environ["LLMOS_CONFIG"] = str(Path(_DATA) / "no-config.toml")

from llmos.kernel.model_file import default_model_path  # noqa: E402
from llmos.kernel.backends import engine as _engine  # noqa: E402

# The engine path that `make` proved on this CPU, before any test imports llama.cpp.
_engine.prepare_process(default_model_path())
from llmos.app.qt_compat import guard_singletons  # noqa: E402

# pytest-qt calls into PySide6 in every test; on Python 3.11 its abi3 build loses references to
# None/True/False on such calls and the run aborts at some teardown (see app/qt_compat.py).
guard_singletons()

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = default_model_path()
    if not path.is_file():
        pytest.fail(f"the embedded model is missing at {path}: run `make test` (it installs it)")
    return path


@pytest.fixture(scope="session")
def real_backend(model_path: Path) -> Iterator[object]:
    """The embedded GGUF through llama-cpp-python, loaded once for the whole run."""
    from llmos.kernel.backends.base import BackendError
    from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions

    from tests.kernels import shut_down_kernels_on

    backend = LlamaCppBackend(LlamaOptions(model_path, n_ctx=8192))
    try:
        backend.load()
    except BackendError as exc:
        pytest.fail(f"the embedded model did not load: {exc}", pytrace=False)
    try:
        yield backend
    finally:
        # a kernel thread still decoding when the model is closed crashes the process
        leaked = shut_down_kernels_on(backend)
        if leaked:
            import warnings

            warnings.warn(f"{leaked} kernel(s) on the real model were left running by a test; shut down")
        backend.close()


@pytest.fixture()
def real_kernel(real_backend) -> Iterator[object]:
    """A started kernel with the built-in devices on the shared real model: ready, or the test
    fails with one line; shut down (its thread joined) whatever the test does."""
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    from tests.kernels import started

    with started(Kernel(real_backend, DeviceRegistry.from_entry_points())) as kernel:
        yield kernel


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


# voice: espeak-ng speech and a session-wide whisper (tests/peripherals/fixtures.py)
from tests.peripherals.fixtures import spoken, voice_kernel, whisper_stt  # noqa: E402,F401
