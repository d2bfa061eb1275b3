# Two entry points that work on a fresh clone with only python3: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint schema bench bench-instructions bench-scaleout ci scan fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs are pinned by constraints.txt (the lock); a stamp file skips reinstalling.
$(VENV)/.run-installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.run-installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

$(VENV)/.ci-installed: $(VENV)/.test-installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,ci]'
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/keyplane serve --dev

test: $(VENV)/.test-installed
	$(BIN)/pytest

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
