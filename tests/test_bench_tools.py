"""The bench harness's selection (``--only`` with several parts) and the models' side-by-side
table (bench/models.py), fast: no model is loaded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def _load(stem: str):
    sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"llmos_bench_tool_{stem}", BENCH_DIR / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_only_takes_several_substrings():
    run = _load("run")
    assert run.matches(None, "anything")
    assert run.matches("multistep", "bench_multistep")
    assert run.matches("decisions,multistep", "multistep_exact")
    assert run.matches("decisions,multistep", "decisions_right")
    assert not run.matches("decisions,multistep", "voice_first_audio_s")
    assert not run.matches(",", "voice_first_audio_s")  # empty parts select nothing


def _figure(name, value, goal=None, passed=True, unit="share"):
    return {"name": name, "value": value, "unit": unit, "goal": goal, "passed": passed, "detail": None}


def test_the_models_table_puts_each_model_in_its_column():
    models = _load("models")
    results = {
        "0.5b": {"run": {}, "figures": [_figure("multistep_exact", 0.583, ">= 0.8", False),
                                        _figure("decision_seconds", 0.5, unit="s")]},
        "1.5b": {"run": {}, "figures": [_figure("multistep_exact", 0.889, ">= 0.8", True)]},
    }
    rows = models.table(results)
    assert rows[0] == "| figure | 0.5b | 1.5b | unit | goal |"
    assert "| `multistep_exact` | 0.583 (FAIL) | 0.889 (pass) | share | >= 0.8 |" in rows
    assert "| `decision_seconds` | 0.500 | - | s | - |" in rows  # a figure one model lacks
    page = models.page(results, "multistep", quick=False)
    assert page.startswith("# The models side by side") and "| `multistep_exact` |" in page
