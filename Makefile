# Set-up is automatic: every target below creates the virtual environment and gets the data first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FASHION_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test docs docs-serve bench bench-gpu speedrun notebooks data chromium install clean

demo: install data
	$(PY) -m slowlearn train --data fashion_mnist --model cnn --epochs 3 --out runs/demo --force

test: install data
	$(PY) -m pytest -q tests

# The documentation site, from docs/, the docstrings and the notebooks, into site/ (any warning is an error).
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The same, served at http://127.0.0.1:8000 and rebuilt on every change (search needs a server, not file://).
docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

# Re-execute every notebook in full (outputs committed) and record what each prints in smoke mode, which
# tests/test_notebooks.py compares against to catch committed outputs left stale by a code change.
notebooks: install data
	$(PY) nbs/execute.py

bench: install data
	$(PY) benchmarks/import_time.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/instructions.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/optim.py
	$(PY) benchmarks/optim_accuracy.py
	$(PY) benchmarks/one_cycle.py
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/cifar.py
	$(PY) benchmarks/channels_last.py
	$(PY) benchmarks/export.py
	$(PY) benchmarks/fine_tune.py
	$(PY) benchmarks/weight_averaging.py --n-train 10000
	$(PY) benchmarks/precision.py
	$(PY) benchmarks/compile.py

# The speed recipes over 3 seeds next to today's default, timed: run it on a quiet machine.
speedrun: install data
	cd benchmarks && $(abspath $(PY)) speedrun.py --recipe all --seeds 3

# Recipes, the seed recipe against a plain loop and the GPU-only paths, on the GPU at hand (CPU otherwise).
bench-gpu: install data
	cd benchmarks && $(abspath $(PY)) gpu.py

install: $(STAMP)

$(STAMP): settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# $(call apt_install,PACKAGES,WHAT HAPPENS WITHOUT THEM): apt-get install where apt is usable (as root, or with
# sudo that needs no password), updating the package lists only when the first try fails; never fails itself.
apt_install = if ! command -v apt-get >/dev/null; then echo "apt-get not found: $(2)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "apt-get needs root: $(2)"; exit 0; fi; \
	echo "Installing $(1) (Debian packages)"; \
	APT="$$SUDO apt-get -y -q"; \
	$$APT install --no-install-recommends $(1) >/dev/null 2>&1 || \
	  { $$APT update >/dev/null 2>&1 && $$APT install --no-install-recommends $(1) >/dev/null 2>&1; } || \
	  echo "apt-get could not install $(1): $(2)"

# Fashion-MNIST from the Debian package where apt is usable; otherwise slowlearn falls back to
# torchvision's download at first use, and says how to get the data if that fails too.
data:
	@if [ -f $(FASHION_DEB) ]; then exit 0; fi; \
	$(call apt_install,dataset-fashion-mnist,Fashion-MNIST will come from torchvision's download)

# Chromium (Debian's package) for tests/test_docs.py, which opens the built site in it (and skips without it).
chromium:
	@if command -v chromium >/dev/null; then exit 0; fi; \
	$(call apt_install,chromium,tests/test_docs.py will skip its browser checks)

clean:
	rm -rf $(VENV) runs site .pytest_cache *.egg-info
