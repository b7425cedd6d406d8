# filterd: `make run` serves on the embedded default config; `make test` runs the whole suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Wheels of everything filterd[plugins] needs from PyPI, so that a test can install the wheels
# it builds into a fresh virtualenv without the network (pip install --no-index --find-links).
WHEELHOUSE := $(VENV)/wheelhouse

.PHONY: install install-prod run test lint bench bench-smtp bench-spamd bench-policy bench-milter \
	bench-tables bench-pipe bench-delivery bench-greylist soak fuzz clean

install: $(STAMP) $(WHEELHOUSE)/.complete

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) tests/example_plugin/pyproject.toml \
		deploy/install-system-packages.sh
	bash deploy/install-system-packages.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,milter,hash]'
	for p in plugins/*/ tests/example_plugin/; do \
	  if [ -f "$$p/pyproject.toml" ]; then $(PY) -m pip install -q -e "$${p%/}[test]" || exit 1; fi; \
	done
	touch $(STAMP)

# Rebuilt only when a pyproject.toml changes. setuptools builds the wheels (build-system.requires);
# filterd's own wheels are left out: the test builds them from the checkout it tests.
$(WHEELHOUSE)/.complete: Makefile pyproject.toml $(wildcard plugins/*/pyproject.toml) | $(STAMP)
	rm -rf $(WHEELHOUSE)
	$(PY) -m pip wheel -q --wheel-dir $(WHEELHOUSE) '.[plugins,milter,hash]' $(wildcard plugins/*/) 'setuptools>=77'
	rm -f $(WHEELHOUSE)/filterd-*.whl $(WHEELHOUSE)/filterd_*.whl
	touch $@

# A production install (docs/deploy.md): filterd with its plugins and the milter door in a
# virtualenv of its own under PREFIX, `filterd` linked into BINDIR (on PATH); no development
# tools, no test plugin. Needs python3-venv, and gcc with libmilter-dev and libdb-dev to build
# pymilter and berkeleydb.
PREFIX ?= /opt/filterd
BINDIR ?= /usr/local/bin
PYTHON3 ?= python3

install-prod:
	test -x $(PREFIX)/bin/pip || $(PYTHON3) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q '.[plugins,milter,hash]' ./plugins/*/
	mkdir -p $(BINDIR)
	ln -sf $(PREFIX)/bin/filterd $(BINDIR)/filterd
	$(BINDIR)/filterd plugins

# As root (make install needs root), filterd refuses to run without [run] user unless told to:
# the development server and the benchmarks are told to (docs/deploy.md, "Privileges").
run bench-smtp bench-spamd bench-policy bench-milter bench-tables bench-pipe bench-delivery bench-greylist soak: export FILTERD_ALLOW_ROOT = 1

run: install
	$(VENV)/bin/filterd run

test: install
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check filterd plugins tests bench fuzz
	$(VENV)/bin/ruff format --check filterd plugins tests bench fuzz
	$(VENV)/bin/mypy filterd $(dir $(wildcard plugins/*/filterd_*/__init__.py))
	$(VENV)/bin/lint-imports --no-cache

# Coverage-guided fuzzing (atheris, in the dev extra): each harness in fuzz/ for FUZZ_SECONDS,
# one after the other; the corpus grows in var/fuzz/<harness>/corpus from run to run, and a
# crash stops the run with the input in var/fuzz/<harness>/crash-* (docs/testing.md, "Fuzzing").
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := $(sort $(wildcard fuzz/fuzz_*.py))

fuzz: install
	@for harness in $(FUZZ_HARNESSES); do \
	  name=$$(basename $$harness .py); mkdir -p var/fuzz/$$name/corpus; \
	  echo "== $$name: $(FUZZ_SECONDS) s"; \
	  $(PY) $$harness -max_total_time=$(FUZZ_SECONDS) -timeout=60 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix=var/fuzz/$$name/ var/fuzz/$$name/corpus \
	    2>&1 | grep -v '^INFO: Instrumenting' | tail -n 30; \
	  test "$${PIPESTATUS[0]}" = 0 || { echo "== $$name: CRASH (see above)"; exit 1; }; \
	done

# Every benchmark, one after the other (about 15 minutes); each also runs on its own.
# BENCH_ARGS goes to each script, e.g. `make bench-smtp BENCH_ARGS=--quick` (docs/benchmarks.md).
BENCH_ARGS ?=

bench: bench-smtp bench-spamd bench-policy bench-milter bench-tables bench-pipe bench-delivery bench-greylist

bench-smtp: install
	$(PY) bench/run.py $(BENCH_ARGS)

bench-spamd: install
	$(PY) bench/spamd_bench.py $(BENCH_ARGS)

bench-policy: install
	$(PY) bench/policy_bench.py $(BENCH_ARGS)

bench-milter: install
	$(PY) bench/milter_bench.py $(BENCH_ARGS)

bench-tables: install
	$(PY) bench/tables_bench.py $(BENCH_ARGS)

bench-pipe: install
	$(PY) bench/pipe_bench.py $(BENCH_ARGS)

bench-delivery: install
	$(PY) bench/delivery_bench.py $(BENCH_ARGS)

bench-greylist: install
	$(PY) bench/greylist_bench.py $(BENCH_ARGS)

# The soak run (docs/benchmarks.md, "Soak"): 70 % of the measured maximum for DURATION (seconds,
# or 30m, 1h); the JSON goes to bench/results/soak-DURATION.json.
DURATION ?= 30m

soak: install
	$(PY) bench/soak.py --duration $(DURATION) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
