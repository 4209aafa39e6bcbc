"""Fixtures for the device tests on the real model: a kernel whose built-in devices are started
(each with its own folder), every permission granted, and consent recorded and refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


class RecordingBackend:
    """The real backend, keeping every prompt it is shown: what reached the model, exactly."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "prompts", [])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)

    def open(self, pid: int, prompt: str, *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(prompt)
        return self.inner.open(pid, prompt, *args, **kwargs)

    def score(self, pid: int, prompt: str, *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(prompt)
        return self.inner.score(pid, prompt, *args, **kwargs)


@dataclass
class ConsentLog:
    """A user who is asked about every risky call and always says no."""

    requests: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Any) -> bool:
        with self.lock:
            self.requests.append(request)
        return False


@dataclass
class DeviceKernel:
    kernel: Any
    backend: RecordingBackend
    consent: ConsentLog
    data_dir: Path


@pytest.fixture(scope="session")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calibration") / "calibration.json"


@pytest.fixture()
def device_kernel(real_backend, tmp_path: Path, calibration_file: Path) -> Iterator[DeviceKernel]:
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry
    from llmos.kernel.syscalls.dispatch import GrantPolicy
    from llmos.kernel.turn import TurnOptions

    from tests.kernels import started

    registry = DeviceRegistry.from_entry_points()
    registry.start(tmp_path / "data")
    backend = RecordingBackend(real_backend)
    consent = ConsentLog()
    kernel = Kernel(backend, registry, TurnOptions(max_answer_tokens=64), policy=GrantPolicy(grant_all=True),
                    consent=consent, calibration_store=calibration_file)
    with started(kernel):
        yield DeviceKernel(kernel, backend, consent, tmp_path / "data")
