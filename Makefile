# perftune: two commands on a fresh machine.
#   make demo   - create .venv, install perftune with the torch extra, run a real sweep on the CPU
#   make test   - create/update .venv with the dev extras, the TensorFlow and MindSpore
#                 interpreters and headless Chromium, and run the whole test suite
#
# Each framework's trials run under their own interpreter (MindSpore 2.10 needs NumPy 1.x, the
# sweep process's MLflow needs NumPy 2). perftune finds .venv-<framework>/bin/python by itself;
# elsewhere set PERFTUNE_PYTHON_<FRAMEWORK>. A trial interpreter needs only the framework and
# perftune's small trial-side dependencies (WORKER_PKGS); perftune itself is put on its path.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
TORCH   ?= torch==2.13.0
STAMP    = $(VENV)/.perftune-installed
WORKER_PKGS = "numpy" "scipy>=1.10" "scikit-learn>=1.3" "psutil>=5.9"
# What a training script needs to read its tuned config (perftune.Trial.from_best) under that
# interpreter: perftune's store and search-space format, without MLflow (MindSpore's NumPy 1
# rules MLflow out there, but not these).
FROM_BEST_PKGS = "sqlalchemy>=2.0,<3" "alembic>=1.13" "pydantic>=2.6,<3" "pyyaml>=6"
TF_PKGS ?= "tensorflow-cpu==2.21.*"
MS_PKGS ?= "mindspore==2.10.*" "numpy<2"
DEMO_TRIALS ?= 16
# The suite runs on two pytest workers (pytest-xdist, whole files each, so a file's shared
# sweep fixture runs once): serial took 20.7 min on a 2-core AMD EPYC and 26 min on a 2-core
# Intel Xeon, two workers 21.6 min on that Xeon. PYTEST_PARALLEL= runs it serially.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

.PHONY: demo test install frameworks browser lint docs bench bench-frameworks clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the local CPU build: the project's own range then installs nothing more.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[torch,dev]"
	touch $(STAMP)

install: $(STAMP)

.venv-tensorflow/.installed: Makefile
	$(PY) -m venv .venv-tensorflow
	.venv-tensorflow/bin/pip install -q --upgrade pip
	.venv-tensorflow/bin/pip install -q $(TF_PKGS) $(WORKER_PKGS) $(FROM_BEST_PKGS)
	touch $@

.venv-mindspore/.installed: Makefile
	$(PY) -m venv .venv-mindspore
	.venv-mindspore/bin/pip install -q --upgrade pip
	.venv-mindspore/bin/pip install -q $(MS_PKGS) $(WORKER_PKGS) $(FROM_BEST_PKGS)
	touch $@

frameworks: .venv-tensorflow/.installed .venv-mindspore/.installed

# Headless Chromium and its driver for the UI test (tests/e2e/test_e2e_ui.py), from Debian's
# packages when missing: as root or through sudo, non-interactively; elsewhere a one-line note.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then \
		echo "note: no apt-get here: install chromium and chromedriver yourself, or the browser tests fail under make test"; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
		else echo "note: chromium/chromedriver missing and neither root nor sudo: run 'sudo apt-get install chromium chromium-driver'"; exit 0; fi; \
		echo "installing chromium and chromium-driver (apt-get)"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/perftune sweep --workload mlp-digits --framework torch --device cpu --trials $(DEMO_TRIALS) --seed 0

test: $(STAMP) frameworks browser
	$(BIN)/ruff check tuner search_spaces storage tests benchmarks examples
	PERFTUNE_REQUIRE_FRAMEWORKS=1 $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tuner search_spaces storage tests benchmarks examples

# docs/cli.md's option lists, pasted from the CLI's --help (tests/docs/test_docs_cli.py checks them).
docs: $(STAMP)
	$(BIN)/python tests/docs/cli_reference.py

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

bench-frameworks: $(STAMP) frameworks
	$(BIN)/python benchmarks/frameworks.py

clean:
	rm -rf .perftune build *.egg-info
