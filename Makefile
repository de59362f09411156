# `make demo` and `make test` do all set-up on a fresh machine: they bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The oldest versions this machine can install (requirements-oldest.txt), in a venv of their own.
OLDEST_PYTHON ?= python3.11
OLDEST_VENV := .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed-stamp
DOCS_STAMP := $(VENV)/.docs-stamp
INTEGRATIONS_STAMP := $(VENV)/.integrations-stamp

.PHONY: demo test quick format lint typecheck unit unit-public optimized examples docs test-oldest \
	dist-check bench fuzz clean

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict

# Lightning, accelerate and transformers, for tests/public/test_integrations.py and the integrations
# guide (requirements-integrations.txt; torch stays the pinned CPU build).
$(INTEGRATIONS_STAMP): requirements-integrations.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-integrations.txt
	touch $(INTEGRATIONS_STAMP)

unit: $(STAMP) $(INTEGRATIONS_STAMP)
	$(BIN)/python -m pytest -q --cov=reproducible_block --cov-branch \
		--cov-report=term:skip-covered --cov-fail-under=95

# The fast suite again with every raw-memory fast path off (reproducible_block/_fast): only the
# public APIs, which must give the same streams (tests/streams/test_golden_streams.py included).
unit-public: $(STAMP) $(INTEGRATIONS_STAMP)
	REPRODUCIBLE_BLOCK_FAST_PATHS=0 $(BIN)/python -m pytest -q --no-cov -m "not slow"

# The suite again with assertions stripped: the library must not rely on assert. The slow tests
# (other processes, long property runs) ran in `unit`; they add nothing here but minutes.
optimized: $(STAMP) $(INTEGRATIONS_STAMP)
	$(BIN)/python -O -m pytest -q --no-cov -m "not slow" -W "ignore::pytest.PytestConfigWarning"

# The inner loop: lint, types and the fast tests (no other processes, no DataLoader workers; the
# "dev" Hypothesis profile), stopping at the first failure. `make unit` runs everything.
quick: lint typecheck $(INTEGRATIONS_STAMP)
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-dev} $(BIN)/python -m pytest -q --no-cov -x -m "not slow"

# ruff's formatter over the tree (`make lint` checks that nothing is left to format).
format: $(STAMP)
	$(BIN)/ruff format .

# Every example, once (examples/resume.py is the check of bit-exact resume, alone and on 2 ranks),
# a repeated key an error in every process (no example replays a key by mistake). Python reads
# PYTHONWARNINGS before the library can be imported: the filter names RepetitionWarning by its
# message ("Repeated key: ...") and its base class, UserWarning.
examples: $(STAMP)
	@for f in examples/*.py; do echo "== $$f"; \
		PYTHONWARNINGS="error:Repeated key:UserWarning" $(BIN)/python $$f > /dev/null || exit 1; done

# The documentation tools, only when the site is built (requirements-docs.txt, from PyPI).
$(DOCS_STAMP): requirements-docs.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-docs.txt
	touch $(DOCS_STAMP)

# The site, in site/: --strict fails on any warning (a broken link or reference, a docstring
# that does not parse); then every public name must have an entry in the API reference.
# NO_MKDOCS_2_WARNING silences a banner about MkDocs 2, not a build warning.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python docs/_ext/check_reference.py site/objects.inv

# The fast tests with the lowest versions of the dependencies (no coverage gate, no -O pass; the
# slow ones, processes and workers, run in `unit` with the pinned versions).
# The package goes in without dependencies; `pip check` then fails if pyproject.toml asks for
# more than the pinned versions, so what runs here is what pyproject.toml declares as lowest.
$(OLDEST_STAMP): pyproject.toml requirements-oldest.txt
	rm -rf $(OLDEST_VENV)
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q -r requirements-oldest.txt
	$(OLDEST_VENV)/bin/python -m pip install -q --no-deps -e .
	$(OLDEST_VENV)/bin/python -m pip check
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	@$(OLDEST_VENV)/bin/python -c "import sys, numpy, torch, wrapt; print('== oldest: Python', \
		sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, \
		'wrapt', wrapt.__version__)"
	$(OLDEST_VENV)/bin/python -m pytest -q -m "not slow"

# Build the sdist and the wheel, check their contents, install the wheel into a fresh venv.
dist-check: $(STAMP)
	$(BIN)/python .ci/check_dist.py

test: lint typecheck unit unit-public optimized examples docs test-oldest dist-check

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Property tests with many more examples than CI runs.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q --no-cov tests/blocks/test_properties.py \
		tests/streams/test_stream_derivation.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) site .pytest_cache .mypy_cache .ruff_cache .coverage
