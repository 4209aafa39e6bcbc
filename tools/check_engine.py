"""Prove llama.cpp on this CPU with the embedded model and remember the path (run by `make`).

Each engine path is tried in a subprocess, fastest first (``llmos.kernel.backends.engine``); the
first whose greedy decode gives the expected tokens is kept. Quick the second time: the choice is
remembered until llama.cpp, the model or the CPU changes. ``--recheck`` checks again anyway.
"""

from __future__ import annotations

import sys

from llmos.kernel.backends import engine
from llmos.kernel.model_file import default_model_path


def main(argv: list[str]) -> int:
    model = default_model_path()
    choice = engine.choose(model, recheck="--recheck" in argv, say=print, progress=print)
    if choice.path is None:
        print(f"engine: llama.cpp does not run on this CPU: {choice.summary()}", file=sys.stderr)
        print("engine: run `llmos doctor` for the details", file=sys.stderr)
        return 1
    speed = f", {choice.tokens_per_s:.1f} tokens/s" if choice.tokens_per_s else ""
    print(f"engine: {choice.path} passed its check on this CPU{speed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
