# Set-up and the two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.socratic-installed
INSTALLED_DEV := $(VENV)/.socratic-installed-dev

.PHONY: demo test install data clean

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

test: $(INSTALLED_DEV)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
