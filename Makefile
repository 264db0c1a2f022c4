# Spendguard developer commands. The README names these targets; .ci/run calls `make test`.
#
#   make demo   set up .venv, migrate, sync prices, seed the demo organization, its budgets and recommendations,
#               serve on 127.0.0.1:$(PORT)
#   make test   set up .venv and run the whole test suite (PostgreSQL / Redis when reachable, see README)
#   make lint   ruff check + ruff format --check
#   make bench  ingest benchmark under gunicorn on the local PostgreSQL + Redis (prints figures)

PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
PYTEST_ARGS ?=

BIN := $(VENV)/bin
# Touched after a successful install: pip runs again only when pyproject.toml is newer.
STAMP := $(VENV)/.spendguard-installed

# The demo always runs on the embedded default (SQLite under var/, eager Celery, local-memory cache,
# console email), whatever DATABASE_URL / REDIS_URL the shell has: it must never seed a real database.
# Links in alert e-mails point at the demo's own port.
DEMO_ENV := env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL DJANGO_SETTINGS_MODULE=config.settings.base \
	SPENDGUARD_BASE_URL=http://127.0.0.1:$(PORT)

.PHONY: install demo test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEMO_ENV) $(BIN)/python manage.py sync_beat_schedule
	$(DEMO_ENV) $(BIN)/python manage.py sync_prices
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo --base-url http://127.0.0.1:$(PORT)
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo_recommendations
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo_budgets
	$(DEMO_ENV) $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python manage.py bench_ingest
