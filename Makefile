# Set-up and the two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.socratic-installed
INSTALLED_DEV := $(VENV)/.socratic-installed-dev

.PHONY: demo test install data browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first (an installed or locally available build is preferred: tools/ensure_torch.py), then the package.
$(INSTALLED): $(PY) pyproject.toml
	$(PY) tools/ensure_torch.py
	$(PY) -m pip install -q -e .
	touch $@

$(INSTALLED_DEV): $(INSTALLED)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(INSTALLED)

# Fashion-MNIST for the demo: Debian's package when apt can be used, else a download into data/.
data: $(INSTALLED)
	$(PY) -m socratic data fashion_mnist --install

demo: data
	$(PY) -m socratic demo

# Headless Chromium for the HTML report's test (tests/test_html_report.py): Debian's package when it is missing
# and apt can be used (root); otherwise that test fails naming the package.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
	  || echo "apt-get install chromium failed: tests/test_html_report.py will fail"; \
	else echo "chromium is missing and apt-get cannot be used (not root?): install Debian's package chromium"; fi

test: $(INSTALLED_DEV) browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
