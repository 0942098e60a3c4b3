# Two entry points that install what they need first (into the current
# Python environment, from the project's requirement files) and are fast
# when everything is installed:
#   make demo   - the main job: train a clean and an adversarially trained
#                 model on real microscopy images and compare them with SEA
#   make test   - the whole test suite
PYTHON ?= python
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?= -n 2
STAMP := .install-stamp
# modules whose presence says the environment is complete
CHECK_MODULES := torch torchvision mmcv mmengine mmseg mmpretrain pytest \
	hypothesis xdist timm tifffile ndev_sampledata prettytable matplotlib

.PHONY: install test demo clean

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
	@# torch/torchvision/mmcv only when absent: a GPU torch or a full mmcv
	@# already installed is kept (requirements/cpu.txt is the CPU path)
	@$(PYTHON) -c "import torch, torchvision" 2>/dev/null || \
		$(PIP) install $$(grep -E '^torch(vision)?==' requirements/cpu.txt)
	@$(PYTHON) -c "import mmcv" 2>/dev/null || \
		$(PIP) install $$(grep -E '^mmcv-lite==' requirements/cpu.txt)
	$(PIP) install -q -e ".[tests,optional]"
	@touch $(STAMP)

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS) tests

demo: install
	$(PYTHON) tools/demo.py

clean:
	rm -rf $(STAMP) work_dirs .pytest_cache
