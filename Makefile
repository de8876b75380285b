# StreamRec: two commands set everything up on a fresh machine.
#   make demo   install, start the local stack, run the platform end to end, print a report
#   make test   install and run the whole test suite (what .ci/run calls)

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-fast lint bench install preflight down clean

demo: install
	$(BIN)/streamrec demo

test: install
	$(BIN)/pytest

test-fast: install  ## unit tests and the quick integration tests only
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m benchmarks.replay_bench

install: preflight $(VENV)/.installed

preflight:
	@infra/preflight.sh $(PYTHON)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $@

down:
	-$(BIN)/streamrec down

clean: down
	rm -rf $(VENV) .streamrec
