# Two commands matter: `make demo` and `make test`. Both set everything up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.optarena-installed
# Tests and CI read the shared real datasets when they sit beside the checkout.
SHARED_DATA := $(abspath ../shared/data)
export OPTARENA_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),)

.PHONY: setup demo test test-fast lint chromium

setup: $(STAMP)

# --system-site-packages: a torch the user already has (CUDA or not) stays visible and is never replaced.
# Only when no torch is importable do we install the CPU wheel, pinned, so no CUDA build is pulled.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/optarena demo

# The HTML report test renders in headless Chromium (Debian's package); install it when absent and possible.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	    || echo "chromium not installed: the HTML rendering test will be skipped"; }

test: $(STAMP) chromium
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
