# The few commands people type. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-postgres test-sqlite lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## run: the whole service on the embedded defaults (SQLite, embedded Redis, console gateway)
run: $(BIN)/.installed
	$(BIN)/telephony run

## test: the suite on PostgreSQL + Redis, then the same suite on SQLite
test: test-postgres test-sqlite

test-postgres: $(BIN)/.installed
	./scripts/ensure-services
	./scripts/ensure-browser
	$(BIN)/pytest -q

test-sqlite: $(BIN)/.installed
	./scripts/ensure-services
	./scripts/ensure-browser
	TEST_DATABASE_URL=sqlite $(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: webhook throughput and latency under gunicorn; missed call to text-back; the queue at 100 vs 100,000 tasks (JSON)
bench: $(BIN)/.installed
	./scripts/ensure-services
	$(BIN)/python -m bench.webhook
	$(BIN)/python -m bench.speed_to_patient
	$(BIN)/python -m bench.queue

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
