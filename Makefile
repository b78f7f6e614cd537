# The README's two commands: `make demo` and `make test`.
PYTHON      ?= python3
VENV        ?= .venv
PY           = $(VENV)/bin/python
CONSTRAINTS  = constraints.txt
STAMP        = $(VENV)/.fesurf-installed
# PLUMED 2.11 kernel (and its `plumed` tool) from the PyPI hillclimber wheel, in a folder of its own:
# installed without its dependencies, and outside site-packages so that its `plumed/` package cannot
# shadow the PyPI `plumed` wrapper. fesurf.plumed.find_kernel looks here after PLUMED_KERNEL and system installs.
KERNEL_DIR   = $(VENV)/plumed-kernel
KERNEL       = $(KERNEL_DIR)/plumed/_lib/lib/libplumedKernel.so
# --no-compile: pip would byte-compile every installed file (torch alone: 37 s with, 13 s without, on
# 2 cores); Python compiles only the modules it imports, on first import, and keeps the .pyc.
PIP          = $(PY) -m pip --disable-pip-version-check
INSTALL      = $(PIP) install --quiet --no-compile

.PHONY: demo test install kernel clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

# pip pinned; torch 2.13.0 (CPU build) first, so nothing pulls a CUDA build; then fesurf with the
# validated versions of everything else (constraints.txt; refresh with scripts/refresh_pins.sh).
$(STAMP): $(PY) pyproject.toml $(CONSTRAINTS)
	$(INSTALL) -c $(CONSTRAINTS) pip
	$(INSTALL) torch==2.13.0
	$(INSTALL) -c $(CONSTRAINTS) -e ".[test,docs]"
	$(INSTALL) --no-deps -c $(CONSTRAINTS) torch-dftd  # D3 tables; its pymatgen dependency is unused
	touch $(STAMP)

$(KERNEL): $(CONSTRAINTS) | $(PY)
	rm -rf $(KERNEL_DIR)
	$(INSTALL) --no-deps -c $(CONSTRAINTS) --target $(KERNEL_DIR) hillclimber
	test -f $(KERNEL)

install: $(STAMP)

kernel: $(KERNEL)

demo: $(STAMP)
	$(VENV)/bin/fesurf run examples/malonaldehyde.toml

# One pytest worker per usable core (pytest-xdist; fesurf.execution.usable_cores reads the affinity mask
# and the cgroup quota), whole files per worker so that module fixtures are built once. Every test is
# seeded and single-threaded, so the numbers do not depend on the worker count.
test: $(STAMP) $(KERNEL)
	PLUMED_KERNEL=$(abspath $(KERNEL)) $(PY) -m pytest -q \
	  -n $$($(PY) -c "from fesurf.execution import usable_cores; print(usable_cores())") --dist loadfile --durations=25

# The documentation site (docs/_build/html): Sphinx in nitpicky mode, warnings as errors; notebooks are
# rendered with their stored outputs, never executed (python scripts/refresh_tutorials.py refreshes them).
docs: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m sphinx -n -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache
