# Entry points that install what they need first (into the current Python
# environment, from the project's requirement files) and are fast when
# everything is installed:
#   make demo       - the main job: train a clean and an adversarially trained
#                     model on real microscopy images and compare them with SEA
#   make test       - the whole test suite (what CI runs)
#   make test-fast  - the suite without the tests marked slow
#   make lint       - flake8, isort and yapf (setup.cfg) on the whole tree
#   make test-oldest - the second CI environment: a virtual environment
#                     (.venv-oldest/) with the oldest supported torch, numpy
#                     1.x and mmcv-lite (requirements/oldest.txt), then the
#                     same install, then the fast suite there
#
# The install never changes numpy, torch, torchvision or mmcv that are already
# installed: every pip call runs under a constraints file that pins them to
# the installed versions (.install-constraints*.txt, written each time, one
# per Python environment, as is the install stamp .install-stamp*).
# `make clean` leaves .venv-oldest/ alone; remove it to build it afresh.
DEFAULT_PYTHON := $(shell command -v python3 2>/dev/null || command -v python 2>/dev/null || echo python3)
PYTHON ?= $(DEFAULT_PYTHON)
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?= -n 2
# one install stamp (and constraints file) per Python environment: another
# PYTHON gets its own, named after its path
ENV_SUFFIX := $(if $(filter-out $(DEFAULT_PYTHON),$(PYTHON)),-$(subst /,_,$(PYTHON)))
STAMP := .install-stamp$(ENV_SUFFIX)
CONSTRAINTS := .install-constraints$(ENV_SUFFIX).txt
# the second CI environment (make test-oldest): torch 2.1.2 has wheels for
# Python 3.8-3.11 only, so OLDEST_BASE_PYTHON must be one of those
OLDEST_VENV ?= .venv-oldest
OLDEST_BASE_PYTHON ?= $(PYTHON)
OLDEST_PYTHON := $(OLDEST_VENV)/bin/python
# packages kept as they are when present
KEEP := numpy torch torchvision mmcv mmcv-lite
# modules whose presence says the environment is complete
CHECK_MODULES := torch torchvision mmcv mmengine mmseg mmpretrain pytest \
	hypothesis xdist timm tifffile ndev_sampledata prettytable matplotlib \
	flake8 isort yapf
LINT_PATHS := mmseg_robust tools tests benchmarks configs setup.py

.PHONY: install test test-fast test-oldest oldest-env lint demo clean

# -I: do not let this checkout's folder on sys.path hide a missing install;
# mmseg_robust must be installed from *this* checkout
install:
	@$(PYTHON) -I -c "import importlib.util as u, os, sys; \
	spec = u.find_spec('mmseg_robust'); here = os.path.realpath(sys.argv[1]); \
	ok = spec is not None and os.path.realpath(spec.origin).startswith(here + os.sep); \
	ok = ok and all(u.find_spec(m) for m in sys.argv[2:]); \
	sys.exit(0 if ok else 1)" "$(CURDIR)" $(CHECK_MODULES) || rm -f $(STAMP)
	@$(MAKE) --no-print-directory $(STAMP)

$(STAMP): setup.py $(wildcard requirements/*.txt)
	@$(PYTHON) -c "import importlib.metadata as m, sys; \
	v = lambda n: next((d.version for d in m.distributions() \
	                    if (d.metadata['Name'] or '').lower() == n), None); \
	open(sys.argv[1], 'w').write(''.join( \
	    f'{n}=={v(n)}\n' for n in sys.argv[2:] if v(n)))" $(CONSTRAINTS) $(KEEP)
	@echo "keeping installed: $$(tr '\n' ' ' < $(CONSTRAINTS))"
	@# torch (+ torchvision) only when absent (requirements/cpu.txt); a
	@# torchvision to match an installed torch; mmcv-lite only when no mmcv
	@$(PYTHON) -c "import torch" 2>/dev/null || \
		$(PIP) install -c $(CONSTRAINTS) $$(grep -E '^torch(vision)?==' requirements/cpu.txt)
	@$(PYTHON) -c "import torchvision" 2>/dev/null || \
		$(PIP) install -c $(CONSTRAINTS) torchvision
	@$(PYTHON) -c "import mmcv" 2>/dev/null || \
		$(PIP) install -c $(CONSTRAINTS) $$(grep -E '^mmcv-lite==' requirements/cpu.txt)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[tests,optional,lint]"
	$(PIP) install -q --no-deps -r requirements/demo.txt
	@touch $(STAMP)

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS) tests

test-fast: install
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m "not slow" tests

lint: install
	$(PYTHON) -m flake8 $(LINT_PATHS)
	$(PYTHON) -m isort --check-only --diff $(LINT_PATHS)
	$(PYTHON) -m yapf --diff --recursive $(LINT_PATHS)

demo: install
	$(PYTHON) tools/demo.py

# The oldest supported environment in .venv-oldest/ (created once, then
# reused): requirements/oldest.txt first, then `make install` with that
# Python, which keeps those four packages and adds the rest
oldest-env:
	@test -x $(OLDEST_PYTHON) || { \
		$(OLDEST_BASE_PYTHON) -c "import sys; sys.exit(sys.version_info[:2] > (3, 11))" || { \
		echo "error: torch 2.1.2 has wheels for Python 3.8-3.11 only, and" \
		     "$(OLDEST_BASE_PYTHON) is newer: make test-oldest OLDEST_BASE_PYTHON=python3.11"; \
		exit 1; }; \
		echo "creating $(OLDEST_VENV)/ with $(OLDEST_BASE_PYTHON)"; \
		$(OLDEST_BASE_PYTHON) -m venv $(OLDEST_VENV); }
	$(OLDEST_PYTHON) -m pip install -q -r requirements/oldest.txt
	@$(MAKE) --no-print-directory install PYTHON=$(OLDEST_PYTHON)

test-oldest: oldest-env
	$(OLDEST_PYTHON) -m pytest $(PYTEST_ARGS) -m "not slow" tests

clean:
	rm -rf .install-stamp* .install-constraints*.txt work_dirs .pytest_cache
