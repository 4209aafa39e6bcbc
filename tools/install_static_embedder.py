"""Distil the static document embedder's table from the installed MiniLM model (run by `make`).

Writes ``~/.local/share/llmos/models/static/minilm-static-v<N>.npz`` (or under
``$LLMOS_MODELS_DIR``): every vocabulary token through all-MiniLM-L6-v2 once, PCA, SIF weights
(see :mod:`llmos.memory.static_embedder`). About a minute on 2 cores; idempotent: a table of the
current version built from the installed model is kept, so the second run returns at once.
"""

from __future__ import annotations

import argparse
import sys
import time

from llmos.memory.embedder import EmbedderError
from llmos.memory.static_embedder import default_table_path, distill, table_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="distil again even when the table is in place")
    args = parser.parse_args(argv)
    path = default_table_path()
    why = "--force" if args.force else table_status(path)
    if why is None:
        print(f"static embedder: {path} is in place")
        return 0
    print(f"static embedder: distilling {path} from MiniLM (about a minute) ...")
    started = time.perf_counter()
    try:
        distill(path)
    except EmbedderError as exc:
        print(f"static embedder: {exc}", file=sys.stderr)
        return 1
    problem = table_status(path)
    if problem:
        print(f"static embedder: {problem}", file=sys.stderr)
        return 1
    print(f"static embedder: {path} built in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
