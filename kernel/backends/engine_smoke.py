"""The engine smoke check, run in a subprocess: load a GGUF, decode a fixed prompt greedily.

``python -m llmos.kernel.backends.engine_smoke PATH_NAME MODEL EXTRA_BUFTS [N_TOKENS [PROMPT_NUMBERS]]``
prints one JSON line ``{"tokens": [...], "tokens_per_s": ..., "prefill_tokens_per_s": ..., "finite": true}``
(the benchmark asks for more tokens and a longer prompt: counting up to PROMPT_NUMBERS). It runs in its own process because
what it checks is exactly what can kill one: a llama.cpp build that crashes on this CPU (an
illegal instruction, the AMX segfault) dies here, and the parent reads the signal.

``LLMOS_ENGINE_FAULT`` (``native=crash,native-no-repack=wrong``) makes a named path crash for
real (a segfault) or compute a different token, so the fallback can be tested on any machine.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"
N_TOKENS = 16


def _fault(path_name: str) -> str:
    for item in os.environ.get("LLMOS_ENGINE_FAULT", "").split(","):
        name, _, kind = item.partition("=")
        if name.strip() == path_name:
            return kind.strip()
    return ""


def main(argv: list[str]) -> int:
    path_name, model, extra_bufts = argv[0], argv[1], argv[2] == "1"
    n_tokens = int(argv[3]) if len(argv) > 3 else N_TOKENS
    prompt = ", ".join(str(i) for i in range(1, int(argv[4]) + 1)) + "," if len(argv) > 4 else PROMPT
    fault = _fault(path_name)
    import numpy as np

    from llmos.kernel.backends.engine import load_llama

    llm = load_llama(model, extra_bufts=extra_bufts, n_ctx=max(256, 4 * len(prompt) + n_tokens), n_batch=512,
                     n_threads=os.cpu_count() or 1, n_threads_batch=os.cpu_count() or 1)
    import llama_cpp as lc

    if fault == "crash":
        ctypes.string_at(0)  # a real segfault, as a broken build gives
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    start = time.monotonic()
    llm.eval(tokens)
    prefill = time.monotonic() - start
    out: list[int] = []
    finite = True
    start = time.monotonic()
    n_vocab = llm.n_vocab()
    for _ in range(n_tokens):
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        finite = finite and bool(np.isfinite(logits).all())
        tok = int(np.argmax(logits))
        out.append(tok)
        llm.eval([tok])
    seconds = time.monotonic() - start
    if fault == "wrong":
        out[0] = (out[0] + 1) % n_vocab
    print(json.dumps({"tokens": out, "tokens_per_s": round(n_tokens / seconds, 2) if seconds > 0 else None,
                      "prefill_tokens_per_s": round(len(tokens) / prefill, 1) if prefill > 0 else None,
                      "finite": finite, "text": llm.detokenize(out).decode("utf-8", "replace")}))
    sys.stdout.flush()
    os._exit(0)  # skip llama.cpp's teardown: the answer is out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
