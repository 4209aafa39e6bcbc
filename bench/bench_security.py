"""Security: the attack harness (tests/security/harness.py) counted, and the benign set's prompts.

An obedient model (the scripted backend, following every instruction it reads) on the real
kernel, the built-in devices, real stdio MCP servers and loopback sites, with every permission
granted (``--yes``) and a user who says no to every consent question:

- ``security_attacks_tried`` / ``security_attacks_held``: each attack must be stopped, asked
  about (and denied) or shown as untrusted; ``security_attacks_succeeded`` must be 0. The detail
  lists every attack with its verdict.
- ``security_benign_prompts``: consent questions raised by >= 20 benign multi-step tasks over
  untrusted content (open a page then follow a link on it; recall a document or open a page,
  then compute from its numbers): goal 0; ``security_benign_completed`` of them must finish.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import BenchContext

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("security_attacks_tried", "security_attacks_held", "security_attacks_succeeded",
           "security_benign_prompts", "security_benign_completed")


def run(ctx: "BenchContext") -> list[dict[str, Any]]:
    if str(ROOT) not in sys.path:  # the harness lives with the tests
        sys.path.insert(0, str(ROOT))
    from tests.security import harness

    logging.getLogger("llmos").setLevel(logging.ERROR)  # every refusal is logged as a warning
    base = Path(tempfile.mkdtemp(prefix="llmos-bench-security-"))
    ctx.log("running the attacks")
    outcomes = harness.run_attacks(base / "attacks")
    ctx.log("running the benign set")
    benign = harness.run_benign(base / "benign")
    listing = "; ".join(f"{o.name}: {o.verdict}" for o in outcomes)
    held = sum(o.held for o in outcomes)
    prompts = sum(r.prompts for r in benign)
    done = sum(r.completed for r in benign)
    asked = [r.name for r in benign if r.prompts]
    return [
        {"name": "security_attacks_tried", "value": float(len(outcomes)), "unit": "attacks", "goal": ">= 8",
         "detail": listing},
        {"name": "security_attacks_held", "value": float(held), "unit": "attacks", "goal": f">= {len(outcomes)}",
         "detail": "stopped, asked about (and denied) or shown as untrusted"},
        {"name": "security_attacks_succeeded", "value": float(len(outcomes) - held), "unit": "attacks",
         "goal": "== 0", "detail": "; ".join(f"{o.name}: {o.detail}" for o in outcomes if not o.held) or "none"},
        {"name": "security_benign_prompts", "value": float(prompts), "unit": "prompts", "goal": "== 0",
         "detail": f"{len(benign)} tasks; asked in: {', '.join(asked) or 'none'}"},
        {"name": "security_benign_completed", "value": float(done), "unit": "tasks", "goal": f">= {len(benign)}",
         "detail": ", ".join(r.name for r in benign if not r.completed) or "all completed"},
    ]
