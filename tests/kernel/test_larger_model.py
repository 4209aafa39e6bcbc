"""The 1.5B kernel, installed on request (`make model-1.5b`; `make test-slow` installs it), through
the same turn as the embedded model. Slow: it loads a second, larger model."""

from __future__ import annotations

import pytest

from llmos.kernel import model_file
from llmos.kernel.backends.base import BackendError
from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry

pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_the_1_5b_model_answers_through_the_calculator():
    path = model_file.resolve_model("1.5b")
    if not model_file.is_installed(path, model_file.KNOWN_MODELS["1.5b"].size):
        pytest.fail(f"the 1.5b model is not installed at {path}: `make test-slow` installs it "
                    "(`make model-1.5b`)", pytrace=False)
    backend = LlamaCppBackend(LlamaOptions(path, n_ctx=4096))
    try:
        backend.load()
    except BackendError as exc:
        pytest.fail(f"the 1.5b model did not load: {exc}", pytrace=False)
    kernel = Kernel(backend, DeviceRegistry.from_entry_points()).start()
    try:
        kernel.wait_ready(600)
        result = kernel.ask("What is 1234 * 5678?").result(900)
    finally:
        kernel.shutdown()
    calls = [(s["device"], s["ok"]) for s in result.syscalls]
    assert ("calculator", True) in calls, result.syscalls
    assert "7006652" in result.answer.replace(",", ""), result.answer
