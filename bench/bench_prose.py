"""Long-form answers that do not loop (issue 13, item 5): the share of repeated 4-grams.

The set is ``bench/data/longform.json``: 20 requests for 200 to 400 words of prose (stories,
essays, explanations, letters, how-tos), written here and kept out of any tuning (the sampling
was chosen on other prompts: docs/decisions.md, "Prose that does not loop"). Each is answered by
a whole turn of the kernel (``kernel.ask``, every device installed: the decision runs too), once
with greedy decoding alone (the kernel before) and once with the answer sampling
the kernel now uses (``TurnOptions.prose``), on the shared model. The figures are text, not
times, so the two kernels run one after the other.

- ``prose_repeated_4grams``: over all answers, the share of word 4-grams that repeat one seen
  earlier in the same answer (goal from the issue: <= 0.05).
- ``prose_repeated_4grams_greedy``: the same for greedy decoding alone (today's figure, no goal).
- ``prose_looping_answers``: answers of the kernel's sampling whose own share is over 0.2 (one
  sentence pair over and over is about 0.5 and more): goal == 0.
- ``prose_turns_with_a_call``: long-form requests that got a device call ("a 300-word story" is
  not arithmetic): goal == 0.

Details carry the median answer length in words, so a sampler that stops early cannot look good.

Run alone: ``.venv/bin/python bench/run.py --only prose``; ``--quick``: the first 5 prompts.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import BenchContext

FIGURES = ("prose_repeated_4grams", "prose_repeated_4grams_greedy", "prose_looping_answers",
           "prose_turns_with_a_call")
DATA = Path(__file__).resolve().parent / "data" / "longform.json"
LOOPING = 0.2
TURN_TIMEOUT_S = 900.0
_WORD = re.compile(r"[\w']+")


def load(path: Path = DATA) -> list[str]:
    return json.loads(path.read_text(encoding="utf-8"))["prompts"]


def four_grams(text: str) -> tuple[int, int]:
    """(word 4-grams, how many of them repeat one earlier in ``text``), case folded."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return len(grams), len(grams) - len(set(grams))


def repeated_share(texts: list[str]) -> float:
    """Repeated 4-grams over all 4-grams of ``texts`` (each text counted on its own)."""
    total = repeated = 0
    for text in texts:
        n, r = four_grams(text)
        total, repeated = total + n, repeated + r
    return repeated / total if total else 0.0


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    from llmos.kernel.turn import Prose, TurnOptions

    prompts = load()[: 5 if ctx.quick else None]
    answers: dict[str, list[str]] = {"greedy": [], "prose": []}
    called: list[str] = []
    options = {"greedy": TurnOptions(prose=Prose.greedy()), "prose": TurnOptions()}
    for name, opts in options.items():  # text, not time: one kernel after the other is fair
        with ctx.kernel(opts) as kernel:
            for i, prompt in enumerate(prompts, 1):
                ctx.log(f"prose {name} {i}/{len(prompts)}")
                result = kernel.ask(prompt).result(TURN_TIMEOUT_S)
                answers[name].append(result.answer)
                if name == "prose" and result.syscalls:
                    called.append(f"{prompt[:30]}... -> {result.syscalls[0]['device']}")
    words = {name: statistics.median(len(_WORD.findall(a)) for a in texts) for name, texts in answers.items()}
    looping = [i for i, a in enumerate(answers["prose"]) if repeated_share([a]) > LOOPING]
    greedy_looping = sum(repeated_share([a]) > LOOPING for a in answers["greedy"])
    return [{
        "name": "prose_repeated_4grams",
        "value": round(repeated_share(answers["prose"]), 4),
        "unit": "share",
        "goal": "<= 0.05",
        "detail": f"{len(prompts)} prompts, median {words['prose']:.0f} words ({Prose().describe()})",
    }, {
        "name": "prose_repeated_4grams_greedy",
        "value": round(repeated_share(answers["greedy"]), 4),
        "unit": "share",
        "goal": None,
        "detail": f"greedy alone: median {words['greedy']:.0f} words, {greedy_looping} answers over {LOOPING}",
    }, {
        "name": "prose_looping_answers",
        "value": float(len(looping)),
        "unit": "",
        "goal": "== 0",
        "detail": "looping: " + (", ".join(prompts[i][:40] for i in looping) if looping else "none"),
    }, {
        "name": "prose_turns_with_a_call",
        "value": float(len(called)),
        "unit": "",
        "goal": "== 0",
        "detail": "; ".join(called) if called else "every long-form request was answered",
    }]


TUNING = Path(__file__).resolve().parent / "data" / "longform_tuning.json"


def candidates() -> dict[str, Any]:
    """The answer samplings compared by ``--tune`` (on the tuning prompts, never the judged set)."""
    from llmos.kernel.turn import Prose

    greedy = Prose.greedy()
    return {
        "greedy": greedy,
        "greedy + DRY 0.8": replace(greedy, dry_multiplier=0.8),
        "greedy + DRY 2": replace(greedy, dry_multiplier=2.0),
        "greedy + DRY 0.8 + repeat 1.1": replace(greedy, dry_multiplier=0.8, repeat_penalty=1.1),
        "greedy + repeat 1.2": replace(greedy, repeat_penalty=1.2),
        "t 0.7 min-p + DRY 0.8": replace(greedy, temperature=0.7, dry_multiplier=0.8),
    }


def main() -> None:
    import argparse
    import sys
    import tempfile

    from llmos.kernel.backends.llamacpp import LlamaCppBackend, LlamaOptions
    from llmos.kernel.loop import Kernel
    from llmos.kernel.model_file import default_model_path
    from llmos.kernel.registry import DeviceRegistry
    from llmos.kernel.turn import TurnOptions

    parser = argparse.ArgumentParser(description="compare answer samplings on the tuning prompts")
    parser.add_argument("--tune", action="store_true", required=True)
    parser.add_argument("--model", help="a GGUF file (default: the embedded model)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each answer")
    parser.add_argument("--only", help="candidates whose name holds this")
    args = parser.parse_args()
    prompts = load(TUNING)
    backend = LlamaCppBackend(LlamaOptions(args.model or default_model_path(), n_ctx=8192))
    backend.load()
    rows = []
    for name, prose in candidates().items():
        if args.only and args.only not in name:
            continue
        with tempfile.TemporaryDirectory() as data:
            registry = DeviceRegistry.from_entry_points()
            registry.prepare(Path(data))
            kernel = Kernel(backend, registry, TurnOptions(prose=prose)).start()
            try:
                kernel.wait_ready(600)
                results = [kernel.ask(p).result(TURN_TIMEOUT_S) for p in prompts]
            finally:
                kernel.shutdown(close_backend=False)
        texts = [r.answer for r in results]
        calls = sum(bool(r.syscalls) for r in results)
        if args.verbose:
            for text in texts:
                print(f"--- {name}\n{text}\n", file=sys.stderr)
        words = statistics.median(len(_WORD.findall(t)) for t in texts)
        loops = sum(repeated_share([t]) > LOOPING for t in texts)
        rows.append((name, repeated_share(texts), loops, words))
        print(f"{name:24} repeated 4-grams {rows[-1][1]:.3f}  looping {loops}/{len(texts)}  median {words:.0f} words"
              f"  with a call {calls}", flush=True)


if __name__ == "__main__":
    main()
