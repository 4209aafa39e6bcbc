"""How the kernel samples the words of an answer (issue 13, item 5).

Greedy decoding let the embedded 0.5B model loop: asked for a 300-word story, it repeated one
sentence pair until it was stopped. An answer is now sampled the way llama.cpp front ends do it,
with penalties against repeats; the figures that chose the settings are in docs/decisions.md
("Prose that does not loop"), and ``bench/bench_prose.py`` measures them on a set that was not
tuned on.

Only answers are sampled this way. The decision is scored, not sampled, and a call's arguments
are always greedy under their schema's grammar (``turn._generate(..., prose=False)``), so the
decision sets cannot move. The penalties read the tokens the answer generates, never the prompt,
so a device's result is still copied into the answer as it is, and they skip digits and
punctuation (a number of repeated digits, "10000000", copied wrong under llama.cpp's own penalty).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .backends.base import SamplingParams


@dataclass(frozen=True)
class Prose:
    """The sampling of an answer's words. ``temperature`` 0 is greedy; ``seed`` 0 draws with the
    model's seed (a run is then repeatable when the model's seed is fixed)."""

    temperature: float = 0.0
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    dry_multiplier: float = 0.8
    seed: int = 0

    @classmethod
    def greedy(cls) -> "Prose":
        """Greedy decoding alone: the kernel before (and what raw-throughput benchmarks compare)."""
        return cls(temperature=0.0, repeat_penalty=1.0, dry_multiplier=0.0)

    def params(self, max_tokens: int, stop: tuple[str, ...], purpose: str = "") -> SamplingParams:
        return replace(SamplingParams(), max_tokens=max_tokens, stop=stop, purpose=purpose,
                       temperature=self.temperature, top_p=self.top_p, min_p=self.min_p, seed=self.seed,
                       repeat_penalty=self.repeat_penalty, dry_multiplier=self.dry_multiplier)

    def describe(self) -> str:
        parts = ["greedy" if self.temperature <= 0 else f"temperature {self.temperature:g}, min-p {self.min_p:g}"]
        if self.repeat_penalty != 1.0:
            parts.append(f"repeat penalty {self.repeat_penalty:g}")
        if self.dry_multiplier > 0:
            parts.append(f"DRY {self.dry_multiplier:g}")
        return ", ".join(parts)
