# Two commands on a fresh Linux machine with Python 3.11:  make run  |  make test
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test bench setup

$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/csrs dashboard --port $(PORT)

test: setup
	@if command -v chromium >/dev/null; then echo "Chromium found: the real-browser tests run."; \
	 else echo "NOTE: Chromium not installed: the real-browser tests are SKIPPED (apt-get install chromium to run them)."; fi
	$(PY) -m pytest -q -rs

bench: setup
	$(PY) scripts/bench_certify.py
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_dashboard_browser.py --clicks 16
