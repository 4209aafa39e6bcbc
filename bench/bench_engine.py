"""The engine paths side by side: the path chosen on this CPU against the safe (portable) one.

Each path decodes in its own subprocess (``engine_smoke``: the embedded model, a 200-number prompt,
64 greedy tokens), the paths interleaved over repetitions so that the shared machine's noise falls
on all of them alike; the figures are medians and the ratio is chosen / portable. Also reported:
whether every path computes the same tokens, which the fallback relies on.
"""

from __future__ import annotations

import statistics
from typing import Any

FIGURES = ("engine_speedup_vs_portable", "engine_decode_tokens_per_s", "engine_paths_agree")
DECODE_TOKENS = 64
PROMPT_NUMBERS = 200


def run(ctx: Any) -> list[dict[str, Any]]:
    from llmos.kernel.backends import engine

    paths = engine.available_paths()
    choice = engine.choose(ctx.model_path, say=ctx.log)
    names = [p.name for p in paths]
    if "portable" not in names:
        raise RuntimeError("the portable engine is not built: run `make setup`")
    alone = not (ctx.wants("engine_speedup_vs_portable") or ctx.wants("engine_paths_agree"))
    if alone:
        # only the chosen path's speed was asked for (bench/models.py): the portable build decodes
        # 5-6x slower than the native one, so three runs of it would take longer than the rest
        paths = [p for p in paths if p.name == (choice.path or names[-1])]
        names = [p.name for p in paths]
    decode: dict[str, list[float]] = {n: [] for n in names}
    prefill: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, list[int]] = {}
    for rep in range(ctx.reps(3, 1)):
        for path in paths:
            result = engine.smoke(path, ctx.model_path, n_tokens=DECODE_TOKENS, prompt_numbers=PROMPT_NUMBERS)
            if not result.ok:
                ctx.log(f"engine: {path.name} failed: {result.error}")
                continue
            decode[path.name].append(result.tokens_per_s or 0.0)
            prefill[path.name].append(result.prefill_tokens_per_s or 0.0)
            tokens.setdefault(path.name, result.tokens)
            ctx.log(f"engine: rep {rep + 1} {path.name}: {result.tokens_per_s} tok/s decode, "
                    f"{result.prefill_tokens_per_s} tok/s prefill")
    med = {n: statistics.median(v) for n, v in decode.items() if v}
    med_prefill = {n: statistics.median(v) for n, v in prefill.items() if v}
    chosen = choice.path or names[-1]
    detail = ", ".join(f"{n} {med.get(n, 0):.1f} decode / {med_prefill.get(n, 0):.0f} prefill tok/s" for n in names)
    agree = len({tuple(t) for t in tokens.values()}) == 1 and len(tokens) == len(names)
    speed = {"name": "engine_decode_tokens_per_s", "value": round(med[chosen], 1), "unit": "tok/s", "goal": None,
             "detail": f"{chosen}, {DECODE_TOKENS} greedy tokens after a {PROMPT_NUMBERS}-number prompt"}
    if alone:
        return [speed]
    return [
        {"name": "engine_speedup_vs_portable", "value": round(med[chosen] / med["portable"], 2), "unit": "x",
         "goal": ">= 1", "detail": f"chosen {chosen}; {detail}; CPU {' '.join(engine.cpu_features())}"},
        speed,
        {"name": "engine_paths_agree", "value": 1.0 if agree else 0.0, "unit": "bool", "goal": "== 1",
         "detail": f"the {DECODE_TOKENS} greedy tokens of {', '.join(tokens)} are {'identical' if agree else 'different'}"},
    ]
