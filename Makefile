# Two commands on a fresh Linux machine with Python 3.11:  make run  |  make test
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test test-slow bench setup

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port $(PORT)

test: setup
	@if command -v chromium >/dev/null; then echo "Chromium found: the real-browser tests run."; \
	 else echo "NOTE: Chromium not installed: the real-browser tests are SKIPPED (apt-get install chromium to run them)."; fi
	$(PY) -m pytest -q -rs

test-slow: setup
	$(PY) -m pytest -q -rs -m slow

bench: setup
	$(PY) scripts/bench_certify.py
	$(PY) scripts/bench_train.py
