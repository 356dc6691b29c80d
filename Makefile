# `make demo` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; install the pin first so that
# `torch>=2.4` in pyproject.toml is already satisfied and pip never fetches a CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: test demo venv clean data-deps viz-pictures

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.dev-installed

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

demo: $(VENV)/.dev-installed
	@echo "make demo: renders the glyph dataset, trains glyphs32 on the CPU, samples and draws (arrives with the training issue)."

clean:
	rm -rf $(VENV) .pytest_cache

# Optional real data from Debian: Fashion-MNIST IDX files and Unihan glyph meanings.
# Tests never need these (they write small files of their own).
DATA_DEBS := dataset-fashion-mnist unicode-data
data-deps:
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DATA_DEBS); \
	else \
		echo "make data-deps installs Debian packages and needs root: run 'sudo apt-get install $(DATA_DEBS)'"; \
		echo "(Fashion-MNIST lands in /usr/share/datasets/fashion-mnist, Unihan in /usr/share/unicode)."; \
	fi

# The README's pictures (docs/viz-*.png), made by the `diffkit viz` commands; needs the glyph dataset's font.
viz-pictures: $(VENV)/.dev-installed
	$(PY) -m diffkit viz schedules --out docs/viz-schedules.png
	$(PY) -m diffkit viz forward --dataset glyphs --out docs/viz-forward.png
	$(PY) -m diffkit viz trajectory --ideal --dataset glyphs --samples 3 --out docs/viz-trajectory.png \
		--gif docs/viz-trajectory.gif
	$(PY) -m diffkit viz map --ideal --dataset glyphs --out docs/viz-map.png
	$(PY) -m diffkit viz toy2d --out docs/viz-toy2d.png
	$(PY) -m diffkit viz gaussian1d --out docs/viz-gaussian1d.png

