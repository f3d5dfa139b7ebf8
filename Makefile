PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFPATH ?= nut-config
# `make run` keeps its state in the checkout, never in the system's /var/lib/nutups and /run/nutups
RUNDIR ?= .run

.PHONY: setup run run-config test bench soak power-cuts lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# the example files hold passwords: 0640, as scripts/install.sh installs them (git keeps no modes)
	chmod 0640 nut-config/upsd.users nut-config/nutups.yaml

# installed once, again only when pyproject.toml changes: the runtime dependencies for `make run`,
# the test extras for everything else
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

setup: $(VENV)/.installed-test

run: $(VENV)/.installed-run
	@mkdir -p $(RUNDIR)/data $(RUNDIR)/state
	@echo "nutups: state in $(RUNDIR)/ (datapath $(RUNDIR)/data, sockets in $(RUNDIR)/state)"
	$(VENV)/bin/nutups serve --sim --listen 127.0.0.1:3493 --web 127.0.0.1:8080 \
		--datapath $(RUNDIR)/data --statepath $(RUNDIR)/state

run-config: $(VENV)/.installed-run
	$(VENV)/bin/nutups serve --confpath $(CONFPATH)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_server.py
	$(PY) bench/bench_sim.py
	$(PY) bench/bench_nutsock.py
	$(PY) bench/bench_web.py

# a month in an afternoon (30 simulated days, ~15 min) and a hundred power cuts (~3 min)
soak: setup
	$(PY) bench/soak.py 30 3000

power-cuts: setup
	$(PY) bench/power_cuts.py 100

lint: setup
	$(VENV)/bin/ruff check nutups tests bench

clean:
	rm -rf $(VENV) $(RUNDIR) build *.egg-info .pytest_cache .hypothesis
