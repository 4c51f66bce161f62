# Two commands for a fresh machine: `make run` (set up, launch the app) and `make test`.
# Set-up is idempotent: the virtualenv at .venv is rebuilt only when the requirements change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the project needs (installed when apt is available and we are root);
# the browser tests also need chromium.
APT_PACKAGES := dataset-fashion-mnist
TEST_APT_PACKAGES := chromium

.PHONY: setup system-packages test-system-packages test test-fast run bench clean

setup: system-packages $(STAMP)

system-packages test-system-packages: PACKAGES = $(if $(filter test-%,$@),$(TEST_APT_PACKAGES),$(APT_PACKAGES))
system-packages test-system-packages:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing system packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "WARNING: missing system packages:$$missing"; \
		echo "  Install them by hand: sudo apt-get install -y$$missing"; \
	fi

$(STAMP): requirements.txt requirements-interop.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned first in requirements.txt so pip takes the CPU wheel, not CUDA builds.
	$(PY) -m pip install -q -r requirements.txt -r requirements-interop.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: setup test-system-packages
	$(PY) -m pytest -q

# The edit loop: everything but browser, release-build, training, multi-process, kill and slow tests
# (markers in pyproject.toml), under 90 s on 2 CPU cores. `make test` still runs everything.
test-fast: setup
	$(PY) -m pytest -q -m "not (browser or build or training or multiprocess or kill or slow)"

# `make run RELEASE=bundled-text` serves the text-to-image default (or any release folder / Hub id)
RELEASE ?= bundled
run: setup
	$(PY) app.py --release $(RELEASE)

bench: setup
	$(PY) bench/extract.py
	$(PY) bench/app_latency.py

clean:
	rm -rf $(VENV) .pytest_cache
