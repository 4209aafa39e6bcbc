"""Voice test fixtures: real speech from espeak-ng, and whisper loaded once per run."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from llmos.peripherals.audio import Audio


@pytest.fixture(scope="session")
def spoken() -> Callable[[str], Path]:
    """``spoken("text")`` -> a WAV of espeak-ng saying it (22.05 kHz mono, as espeak writes it)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run `make test` (tools/system_deps.sh installs it)")
    folder = Path(tempfile.mkdtemp(prefix="llmos-spoken-"))
    made: dict[str, Path] = {}

    def speak(text: str) -> Path:
        if text not in made:
            path = folder / f"utterance-{len(made)}.wav"
            subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
            made[text] = path
        return made[text]

    return speak


@pytest.fixture(scope="session")
def whisper_stt():
    """tiny.en, loaded once for the whole run."""
    from llmos.peripherals.stt import SpeechToText

    stt = SpeechToText()
    stt.load()
    return stt


@pytest.fixture()
def voice_kernel(real_backend):
    """A started kernel with the installed devices on the shared real model, like ``real_kernel``."""
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    from tests.kernels import started

    with started(Kernel(real_backend, DeviceRegistry.from_entry_points())) as kernel:
        yield kernel


def trimmed(audio: Audio) -> Audio:
    """``audio`` without the silence espeak-ng puts before and after the words."""
    loud = np.flatnonzero(np.abs(audio.samples) > 0.02 * np.abs(audio.samples).max())
    return Audio(audio.samples[loud[0]:loud[-1] + 1], audio.rate)
