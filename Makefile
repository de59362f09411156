# `make demo` and `make test` do all set-up on a fresh machine: they bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit optimized examples bench fuzz clean

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict

unit: $(STAMP)
	$(BIN)/python -m pytest -q --cov=reproducible_block --cov-branch \
		--cov-report=term:skip-covered --cov-fail-under=95

# The whole suite again with assertions stripped: the library must not rely on assert.
optimized: $(STAMP)
	$(BIN)/python -O -m pytest -q --no-cov -W "ignore::pytest.PytestConfigWarning"

examples: $(STAMP)
	@for f in examples/*.py; do echo "== $$f"; $(BIN)/python $$f > /dev/null || exit 1; done

test: lint typecheck unit optimized examples

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Property tests with many more examples than CI runs.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q --no-cov tests/test_properties.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
