# crm_platform: `make run` to start everything, `make test` to test it. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
# What the Procfile's own lines read ($PORT ...): the environment or the make command line
# first, then .env, then the default, as settings.py reads every other setting. honcho is
# given no env file (-e /dev/null): it would let .env override the environment.
dotenv = $(or $($(1)),$(shell sed -n 's/^$(1)=//p' .env 2>/dev/null | tail -n1),$(2))
PORT := $(call dotenv,PORT,8000)
WEB_CONCURRENCY := $(call dotenv,WEB_CONCURRENCY,2)
WORKER_CONCURRENCY := $(call dotenv,WORKER_CONCURRENCY,2)
MANAGE := $(BIN)/python manage.py

.PHONY: help install services stop migrate port-free run test lint format bench clean

help:
	@echo "make run     install, start PostgreSQL/Redis, migrate, load demo data, serve web + worker + beat"
	@echo "make test    install, start PostgreSQL/Redis, lint, run the test suite"
	@echo "make stop    stop PostgreSQL and Redis started by scripts/services"
	@echo "make lint    ruff check and format check;  make format  apply ruff fixes"
	@echo "make bench   run every benchmark under bench/"

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

services:
	@scripts/services start

stop:
	@scripts/services stop

.env:
	@sed "s|^# DJANGO_SECRET_KEY=.*|DJANGO_SECRET_KEY=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')|" .env.example > .env
	@chmod 600 .env
	@echo "Wrote .env from .env.example (development mode)."

migrate: install services .env
	$(MANAGE) migrate --noinput

# Before anything starts: a second `make run` beside a running one used to migrate, seed and
# start a second beat (every periodic job sent twice) until its web process failed to bind.
port-free:
	@python3 -c 'import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", $(PORT)))' 2>/dev/null \
		|| { echo "Port $(PORT) is in use (another make run?): stop it, or make run PORT=<another>." >&2; exit 1; }

run: port-free migrate
	$(MANAGE) setup_periodic_tasks
	$(MANAGE) collectstatic --noinput --verbosity 0
	$(MANAGE) seed_demo
	@echo
	@echo "================================================================"
	@echo "  Admin:    http://127.0.0.1:$(PORT)/admin/"
	@# pipefail: a refused ADMIN_PASSWORD (or any failure) stops here instead of serving without a login.
	@set -o pipefail; $(MANAGE) ensure_admin | sed 's/^/  /'
	@echo "  API docs: http://127.0.0.1:$(PORT)/api/docs/"
	@echo "  Health:   http://127.0.0.1:$(PORT)/healthz   http://127.0.0.1:$(PORT)/readyz"
	@echo "  Ctrl-C stops web, worker and beat (make stop stops PostgreSQL and Redis)."
	@echo "================================================================"
	@echo
	@# Ctrl-C ends honcho by a signal (exit status above 128): that is a clean stop, not an error.
	PORT=$(PORT) WEB_CONCURRENCY=$(WEB_CONCURRENCY) WORKER_CONCURRENCY=$(WORKER_CONCURRENCY) \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -e /dev/null -f Procfile || test $$? -gt 128

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install services lint
	DJANGO_ENV_FILE= DJANGO_DEBUG=true $(BIN)/pytest -n 2 --dist loadgroup --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

bench: install services
	@for b in bench/[a-z]*.py; do m=$$(basename $$b .py); case $$m in settings|urls|ceiling|common) continue;; esac; \
		echo "== bench.$$m"; DJANGO_DEBUG=true $(BIN)/python -m bench.$$m || exit 1; done

clean:
	@scripts/services destroy
	rm -rf .data $(VENV)
