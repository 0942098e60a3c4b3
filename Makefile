# Entry points that install what they need first (into the current Python
# environment, from the project's requirement files) and are fast when
# everything is installed:
#   make demo       - the main job: train a clean and an adversarially trained
#                     model on real microscopy images and compare them with SEA
#   make test       - the whole test suite (what CI runs)
#   make test-fast  - the suite without the tests marked slow
#   make lint       - flake8, isort and yapf (setup.cfg) on the whole tree
#
# The install never changes numpy, torch, torchvision or mmcv that are already
# installed: every pip call runs under a constraints file that pins them to
# the installed versions (.install-constraints.txt, written each time).
PYTHON ?= $(shell command -v python3 2>/dev/null || command -v python 2>/dev/null || echo python3)
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?= -n 2
STAMP := .install-stamp
CONSTRAINTS := .install-constraints.txt
# packages kept as they are when present
KEEP := numpy torch torchvision mmcv mmcv-lite
# modules whose presence says the environment is complete
CHECK_MODULES := torch torchvision mmcv mmengine mmseg mmpretrain pytest \
	hypothesis xdist timm tifffile ndev_sampledata prettytable matplotlib \
	flake8 isort yapf
LINT_PATHS := mmseg_robust tools tests benchmarks configs setup.py

.PHONY: install test test-fast lint demo clean

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

clean:
	rm -rf $(STAMP) $(CONSTRAINTS) work_dirs .pytest_cache
