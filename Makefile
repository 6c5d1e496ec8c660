# Two entry points, both from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install clean bench soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed once per pyproject.toml change (a stamp file), so `make demo` runs again offline.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install  ## install, then run the daemon against a simulated fleet on loopback
	$(BIN)/healthcheck demo

test: install lint  ## install, then run the linters and the whole test suite
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: install  ## scale, latency accuracy and CPU per kind vs blackbox_exporter + Prometheus (bench/README.md)
	@command -v nginx >/dev/null && command -v prometheus-blackbox-exporter >/dev/null \
		|| echo "for the full comparison: apt-get install nginx-light prometheus prometheus-blackbox-exporter"
	$(BIN)/python bench/scale_bench.py --json bench/scale.json
	$(BIN)/python bench/accuracy_bench.py --json bench/accuracy.json
	$(BIN)/python bench/kinds_bench.py --json bench/kinds.json

soak: install  ## 1,000 endpoints for 12 minutes, a fifth misbehaving: leaks, lag, accounting
	$(BIN)/python bench/soak_bench.py --minutes 12 --json bench/soak.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
