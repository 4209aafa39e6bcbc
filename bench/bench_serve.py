"""`llmos serve` overhead: a non-streamed 64-token completion through the HTTP server (the
official `openai` client on loopback) against the same request run in the kernel directly.

- ``serve_overhead_ratio``: tokens/s in the kernel directly over tokens/s through the server,
  each a whole request (submit to answer) of the same program on the same prompt, interleaved,
  medians (goal <= 1.05).

Run alone: ``.venv/bin/python bench/run.py --only serve``.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

from llmos.app.server import programs
from llmos.app.server.app import ServeOptions, make_app, plain_model_name
from llmos.app.server.http import Server, bind
from llmos.app.server.requests import ChatMessage, Sampling
from llmos.kernel.process import Priority

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = ("serve_overhead_ratio",)

TOKENS = 64
REQUEST = "Count from 1 to 100, separated by commas."  # longer than TOKENS


def _direct(kernel: Any, sampling: Sampling) -> tuple[float, int]:
    prompt = programs.chat_prompt([ChatMessage("user", REQUEST)])
    started = time.perf_counter()
    pid = kernel.spawn("bench api", Priority.API)
    program = programs.completion(prompt, sampling, stop=(programs.END_OF_TURN,))
    result = kernel.submit(pid, "", program=program).result()
    seconds = time.perf_counter() - started
    kernel.kill(pid, reap=True)
    return seconds, result.completion_tokens


def _served(client: Any, model: str) -> tuple[float, int]:
    started = time.perf_counter()
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": REQUEST}],
                                           temperature=0, max_tokens=TOKENS)
    return time.perf_counter() - started, reply.usage.completion_tokens


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    import openai

    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    reps = ctx.reps(5, 2)
    # no devices: the plain model uses none, and the kernel then has no decisions to calibrate
    kernel = Kernel(ctx.backend(), DeviceRegistry()).start()
    try:
        kernel.wait_ready(600)
        server = Server(make_app(kernel, ServeOptions()), bind("127.0.0.1", 0)).start()
        try:
            client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
            model = plain_model_name(kernel)
            sampling = Sampling(model, TOKENS, 0.0, 1.0, (), 0, False, False)
            _served(client, model)  # warm: the prompt's prefix is in the context for both
            direct, served = [], []
            for rep in range(reps):
                ctx.log(f"serve overhead {rep + 1}/{reps}")
                for measure, into in ((lambda: _direct(kernel, sampling), direct), (lambda: _served(client, model), served)):
                    seconds, tokens = measure()
                    into.append(tokens / seconds)
        finally:
            server.stop()
    finally:
        kernel.shutdown(close_backend=False)
    kernel_tps, server_tps = statistics.median(direct), statistics.median(served)
    return [{
        "name": "serve_overhead_ratio",
        "value": round(kernel_tps / server_tps, 3),
        "unit": "x",
        "goal": "<= 1.05",
        "detail": f"kernel {kernel_tps:.1f} tok/s vs server {server_tps:.1f} tok/s "
                  f"({TOKENS} tokens, medians of {reps}, interleaved)",
    }]
