# perftune: two commands on a fresh machine.
#   make demo   - create .venv, install perftune with the torch extra, run a real sweep on the CPU
#   make test   - create/update .venv with the dev extras and run the whole test suite
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
TORCH   ?= torch==2.13.0
STAMP    = $(VENV)/.perftune-installed
DEMO_TRIALS ?= 16

.PHONY: demo test install lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the local CPU build: the project's own range then installs nothing more.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[torch,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/perftune sweep --workload mlp-digits --framework torch --device cpu --trials $(DEMO_TRIALS) --seed 0

test: $(STAMP)
	$(BIN)/ruff check tuner search_spaces storage tests benchmarks examples
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tuner search_spaces storage tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf .perftune build *.egg-info
