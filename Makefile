# Two commands on a fresh machine: `make demo` and `make test`.
# torch is pinned to the exact build that ships on these machines so pip never resolves another.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seqlvm-installed
TORCH  ?= torch==2.13.0
# `make bench BENCH_FLAGS=--quick` for a smoke run, `BENCH_FLAGS=--markdown` for RESULTS.md tables.
BENCH_FLAGS ?=

.PHONY: install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The C loops of seqlvm/kalman/_native.c are compiled by the install, so a change to them reinstalls.
$(STAMP): $(PY) pyproject.toml seqlvm/kalman/_native.c
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/seqlvm demo --out demo_out

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/run_all.py $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) demo_out runs .pytest_cache
