# Two commands on a fresh machine: `make run` (the system on the embedded simulated exchange) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit run stop clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes: idempotent and quick on a second run.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

SUPERVISOR_CONF := deploy/supervisord.conf

# The whole system under supervisord (the embedded simulated exchange unless config/gridbot.toml or
# $GRIDBOT_CONFIG says otherwise), then the live dashboard. Ctrl-C leaves the dashboard; the system keeps running
# until `make stop`.
run: install
	@mkdir -p run/logs
	@if $(BIN)/supervisorctl -c $(SUPERVISOR_CONF) pid >/dev/null 2>&1; then \
		echo "gridbot is already running (supervisord pid $$($(BIN)/supervisorctl -c $(SUPERVISOR_CONF) pid))"; \
	else \
		$(BIN)/supervisord -c $(SUPERVISOR_CONF) && echo "gridbot started under supervisord (logs in run/logs/)"; \
	fi
	@echo "Stop it with: make stop    (leaving the dashboard with Ctrl-C does not stop it)"
	@$(BIN)/gridbot monitor --stop-hint "make stop"

# Stop every program and supervisord itself.
stop:
	@if $(BIN)/supervisorctl -c $(SUPERVISOR_CONF) pid >/dev/null 2>&1; then \
		$(BIN)/supervisorctl -c $(SUPERVISOR_CONF) shutdown; \
	else \
		echo "gridbot is not running"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info
