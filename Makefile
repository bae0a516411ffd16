# Set-up and the two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.socratic-installed

.PHONY: demo test install data clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) tools/ensure_torch.py
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST for the demo: Debian's package when apt can be used, else a download into data/.
data: $(STAMP)
	@$(PY) -m socratic data fashion_mnist --install

demo: data
	$(PY) -m socratic demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
