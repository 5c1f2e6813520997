# Everything runs from a fresh clone with only python3 and make installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The walkthrough notebook's one source is a jupytext percent script; the .ipynb is built (git-ignored).
NOTEBOOK_SRC := notebooks/dreamer_actor_walkthrough.py
NOTEBOOK_IPYNB := build/notebooks/dreamer_actor_walkthrough.ipynb

.PHONY: test demo bench lint install clean notebook

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check dreamer_actor tests benchmarks scripts $(NOTEBOOK_SRC)
	$(BIN)/ruff format --check dreamer_actor tests benchmarks scripts $(NOTEBOOK_SRC)

test: $(STAMP) lint
	mkdir -p $(dir $(NOTEBOOK_IPYNB)) && $(BIN)/jupytext --quiet --to ipynb --output $(NOTEBOOK_IPYNB) $(NOTEBOOK_SRC) && DREAMER_ACTOR_NOTEBOOK_QUICK=1 $(BIN)/python -m pytest --nbmake -p no:xdist -q $(NOTEBOOK_IPYNB)
	$(BIN)/python -m pytest -n 2 -q

notebook: $(STAMP)
	mkdir -p $(dir $(NOTEBOOK_IPYNB))
	$(BIN)/jupytext --to ipynb --output $(NOTEBOOK_IPYNB) $(NOTEBOOK_SRC)

demo: $(STAMP)
	$(BIN)/python -m dreamer_actor.demo

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks.actor_step

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
