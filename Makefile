PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFPATH ?= nut-config

.PHONY: setup run run-config test bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY)
	$(PY) -m pip install -q -e '.[test]'

run: setup
	$(VENV)/bin/nutups serve --sim --listen 127.0.0.1:3493 --web 127.0.0.1:8080

run-config: setup
	$(VENV)/bin/nutups serve --confpath $(CONFPATH)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_server.py
	$(PY) bench/bench_sim.py
	$(PY) bench/bench_nutsock.py
	$(PY) bench/bench_web.py

lint: setup
	$(VENV)/bin/ruff check nutups tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
