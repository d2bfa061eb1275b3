# Two entry points that work on a fresh clone with only python3: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-browser lint schema bench bench-instructions bench-scaleout bench-scale bench-overload ci scan fuzz vendor-graphiql clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs are pinned by constraints.txt (the lock); a stamp file skips reinstalling.
$(VENV)/.run-installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

# The example plugin (examples/keyplane_example_plugin) too: the tests prove that an installed
# check, registered only through its entry point, changes an answer once KEYPLANE_CHECKS names it.
$(VENV)/.test-installed: $(VENV)/.run-installed examples/keyplane_example_plugin/pyproject.toml
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/pip install --quiet --no-deps -e examples/keyplane_example_plugin
	touch $@

$(VENV)/.ci-installed: $(VENV)/.test-installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,ci]'
	touch $@

$(VENV)/.browser-installed: $(VENV)/.test-installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,browser]'
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/keyplane serve --dev

test: $(VENV)/.test-installed
	$(BIN)/pytest

# GraphiQL in Debian's chromium (`apt-get install chromium`), driven by Playwright; here a
# missing browser fails the run instead of skipping the tests.
test-browser: $(VENV)/.browser-installed
	KEYPLANE_REQUIRE_BROWSER=1 $(BIN)/pytest -m browser -n 0

# mypy --strict over src/keyplane and tests/ (the packages listed in [tool.mypy]).
lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Rewrites the committed SDL after a deliberate schema change (a test fails when it drifts).
schema: $(VENV)/.test-installed
	$(BIN)/strawberry export-schema keyplane.schema.root:schema --output src/keyplane/schema/schema.graphql

# keyplane against a bare Strawberry reference (bench/run.py); not part of the test suite.
# BENCH_ARGS=--quick for 1 x 2 s runs; see `python bench/run.py --help`.
bench: $(VENV)/.run-installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# A million keys (bench/scale.py: a keyed request and a key page at 1M keys, memory after
# 100,000 keys) and a burst at twice capacity (bench/overload.py); results in bench/results/.
bench-scale: $(VENV)/.run-installed
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

bench-overload: $(VENV)/.run-installed
	$(BIN)/python bench/overload.py $(BENCH_ARGS)

# Instructions per request under valgrind (steady on a busy machine); see bench/instructions.py.
bench-instructions: $(VENV)/.run-installed
	$(BIN)/python bench/instructions.py $(BENCH_ARGS)

# Server CPU per request and throughput: SQLite + memory vs PostgreSQL + Redis, 1 and 2 workers.
bench-scaleout: $(VENV)/.run-installed
	$(BIN)/python bench/scaleout.py $(BENCH_ARGS)

ci:
	bash .ci/run

# Secret scan of the tracked files (detect-secrets, taught the `fm_` and `fmi_` formats).
scan: $(VENV)/.test-installed
	$(BIN)/python .ci/secrets/scan.py

# schemathesis against a running server: make fuzz URL=http://127.0.0.1:8000 (see .ci/schemathesis).
fuzz: $(VENV)/.ci-installed
	$(BIN)/python .ci/schemathesis/run.py $(URL)

# Fetches the pinned GraphiQL and React builds with npm into src/keyplane/graphiql/static/vendor/
# (pins and the reason for them in scripts/vendor_graphiql.py); commit the result.
vendor-graphiql:
	$(PYTHON) scripts/vendor_graphiql.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
