# One target per thing a person does. Everything installs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.codemill-installed
CORPUS := data/corpus

.PHONY: install jars corpus run test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[pipeline,train,dev,connect]'
	touch $(STAMP)

install: $(STAMP)

jars: install                 ## Delta Lake jars from Maven Central into .jars/
	$(BIN)/codemill jars > /dev/null

$(CORPUS): | install
	$(BIN)/codemill corpus --out $(CORPUS)

corpus: install               ## rebuild the local corpus (stdlib + site-packages)
	$(BIN)/codemill corpus --out $(CORPUS)

run: install jars $(CORPUS)   ## the whole pipeline on local defaults
	$(BIN)/codemill run

test: install jars            ## the test suite (what .ci/run calls)
	$(BIN)/python -m pytest -q

test-fast: install            ## pure tests only, no Spark
	$(BIN)/python -m pytest -q tests/udfs tests/jobs/test_config.py

lint: install
	$(BIN)/ruff check jobs udfs training tests

clean:
	rm -rf lakehouse exports spark-warehouse .pytest_cache
