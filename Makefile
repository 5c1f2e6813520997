# Everything runs from a fresh clone with only python3 and make installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The walkthrough notebook's one source is a jupytext percent script; the .ipynb is built (git-ignored).
NOTEBOOK_SRC := notebooks/dreamer_actor_walkthrough.py
NOTEBOOK_IPYNB := build/notebooks/dreamer_actor_walkthrough.ipynb

.PHONY: test demo demo-exact bench compare lint install constraints clean notebook

# The versions that were tested (constraints.txt, made on Python 3.11); `make install CONSTRAINTS=`
# installs the newest versions pyproject.toml allows instead (e.g. on another Python).
CONSTRAINTS ?= constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Refresh constraints.txt: rebuild $(VENV) from scratch with the newest versions pyproject.toml allows
# (no constraints), then freeze it. Run `make test` afterwards and commit constraints.txt if it passes.
constraints:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	{ echo '# Exact versions of everything `pip install -e ".[dev]"` resolved to ($(shell $(PYTHON) -c 'import platform; print("Python", platform.python_version(), platform.system(), platform.machine())')), torch excluded.'; \
	  echo '# Used by `make install`; refresh with `make constraints`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable --exclude torch; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check dreamer_actor tests benchmarks scripts $(NOTEBOOK_SRC)
	$(BIN)/ruff format --check dreamer_actor tests benchmarks scripts $(NOTEBOOK_SRC)

# The walkthrough notebook runs in its own Jupyter kernel inside the suite (tests/test_notebook.py).
test: $(STAMP) lint
	$(BIN)/python -m pytest -n 2 -q

notebook: $(STAMP)
	mkdir -p $(dir $(NOTEBOOK_IPYNB))
	$(BIN)/jupytext --to ipynb --output $(NOTEBOOK_IPYNB) $(NOTEBOOK_SRC)

# The main job: the DreamerV3 agent learns Pendulum-v1 (its defaults, 20k env steps, seed 0) into a
# new time-stamped folder under runs/ (a previous run is never replaced).
DEMO_OUT ?= runs/pendulum-$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	$(BIN)/python -m dreamer_actor.agent --env Pendulum-v1 --out $(DEMO_OUT)

# The fast check of the actor's maths: imagination in an exact JAX copy of Pendulum (~2 minutes).
demo-exact: $(STAMP)
	$(BIN)/python -m dreamer_actor.demo

# SB3/sbx SAC and DQN beside the agent, then the agent with the dynamics estimator
# (scripts/compare_baselines.py; about 5 hours on 2 cores, one job at a time).
compare: $(STAMP)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[compare]"
	bash scripts/compare_all.sh results/compare

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks.actor_step
	$(BIN)/python -m benchmarks.agent_update

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
