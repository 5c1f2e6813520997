# Everything runs from a fresh clone with only python3 and make installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check dreamer_actor tests benchmarks scripts notebooks/build_notebook.py
	$(BIN)/ruff format --check dreamer_actor tests benchmarks scripts

test: $(STAMP) lint
	DREAMER_ACTOR_NOTEBOOK_QUICK=1 $(BIN)/python -m pytest --nbmake -p no:xdist -q notebooks/dreamer_actor_walkthrough.ipynb
	$(BIN)/python -m pytest -n 2 -q

demo: $(STAMP)
	$(BIN)/python -m dreamer_actor.demo

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks.actor_step

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
